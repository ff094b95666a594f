// The page's service worker: only shows the "your road is done" notice sent by
// `yukimizu public run` (docs/public.md#web-push). It caches nothing.
self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = {}; }
  event.waitUntil(self.registration.showNotification(data.title || "除雪のお知らせ", {
    body: data.body || "", tag: data.tag || "yukimizu", lang: "ja",
    data: { url: data.url || "./" },
  }));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = new URL((event.notification.data && event.notification.data.url) || "./",
                    self.registration.scope).href;
  event.waitUntil(self.clients.openWindow(url));
});
