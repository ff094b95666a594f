// The residents' plowing map. Data: data/feed.geojson, rebuilt every minute by
// `yukimizu public build|run` (docs/public.md). Bands, labels and colours come from the
// feed, so the page and third-party users of the feed agree.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var map = L.map("map", { zoomControl: true, attributionControl: true });
  if (cfg.tile_url) {
    // Tiles are decoration: roads, plows and stations are drawn without them.
    L.tileLayer(cfg.tile_url, {
      attribution: cfg.tile_attribution,
      maxZoom: cfg.tile_max_zoom,
    }).addTo(map);
  }
  var layers = { segments: L.layerGroup().addTo(map), plows: L.layerGroup().addTo(map),
                 stations: L.layerGroup().addTo(map) };
  var state = { feed: null, fitted: false, segments: {}, props: {}, choices: "" };
  window.yukimizuPublic = state; // read by the browser tests and by curious developers

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }

  function fmtTime(iso) {
    if (!iso) { return "—"; }
    var d = new Date(iso);
    // Times are shown in the town's time zone whatever the visitor's device says.
    var j = new Date(d.getTime() + 9 * 3600 * 1000);
    var hh = String(j.getUTCHours()).padStart(2, "0");
    var mm = String(j.getUTCMinutes()).padStart(2, "0");
    return (j.getUTCMonth() + 1) + "月" + j.getUTCDate() + "日 " + hh + ":" + mm;
  }

  function legendSwatch(b) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", "44"); svg.setAttribute("height", "12");
    svg.setAttribute("aria-hidden", "true");
    [["#222", 8, ""], [b.color, 5, b.dash]].forEach(function (s) {
      var line = document.createElementNS(ns, "line");
      line.setAttribute("x1", "2"); line.setAttribute("y1", "6");
      line.setAttribute("x2", "42"); line.setAttribute("y2", "6");
      line.setAttribute("stroke", s[0]); line.setAttribute("stroke-width", String(s[1]));
      if (s[2]) { line.setAttribute("stroke-dasharray", s[2]); }
      svg.appendChild(line);
    });
    return svg;
  }

  function drawLegend(legend) {
    var ul = document.getElementById("legend-items");
    ul.textContent = "";
    legend.forEach(function (b) {
      var li = el("li", null, "band-" + b.key);
      li.appendChild(legendSwatch(b));
      li.appendChild(el("span", b.label));
      ul.appendChild(li);
    });
    var plow = el("li", null, "legend-plow");
    plow.appendChild(el("span", "車", "plow-icon legend-plow-icon"));
    plow.appendChild(el("span", "除雪車（作業中）"));
    ul.appendChild(plow);
  }

  // ---- My road: chosen by the resident, kept in this browser only (localStorage). Nothing
  // of it goes into a request: the feed URL is the same for everyone (docs/public.md#my-road).
  var MY_KEY = "yukimizu.myRoad";
  var MY_DEFAULT = "道路を選ぶと、除雪の状況と見込みをここに表示します。";

  function loadMyRoad() {
    try { return window.localStorage.getItem(MY_KEY); } catch (e) { return null; }
  }

  function saveMyRoad(id) {
    try {
      if (id) { window.localStorage.setItem(MY_KEY, id); } else { window.localStorage.removeItem(MY_KEY); }
    } catch (e) { state.storageFailed = true; } // private mode: kept for this visit only
  }
  state.myRoad = loadMyRoad();

  function etaWords(p) {
    return p.eta_label ? "除雪見込み: " + p.eta_label + (p.eta_range ? "（" + p.eta_range + "）" : "") : "";
  }

  function drawMyRoad() {
    var status = document.getElementById("myroad-status");
    var clear = document.getElementById("myroad-clear");
    var id = state.myRoad, p = id ? state.props[id] : null;
    status.textContent = "";
    clear.hidden = !id;
    Object.keys(state.segments).forEach(function (k) {
      state.segments[k].setStyle({ weight: k === id ? 10 : 6 });
    });
    if (!id) { status.textContent = MY_DEFAULT; return; }
    if (!p) { status.textContent = "選んだ道路は現在の一覧にありません。選び直してください。"; return; }
    status.appendChild(el("strong", p.name, "myroad-name"));
    status.appendChild(el("span", "：" + p.band_label + (p.inferred ? "（推定）" : ""), "myroad-band"));
    var eta = etaWords(p);
    if (eta) { status.appendChild(el("span", " " + eta, "myroad-eta eta-" + p.eta)); }
    status.appendChild(el("span", " 最終除雪: " +
      (p.last_plowed ? fmtTime(p.last_plowed) : "記録なし（過去7日）"), "myroad-last"));
  }

  function chooseRoad(id) {
    var changed = state.myRoad !== id;
    state.myRoad = id;
    saveMyRoad(id);
    drawMyRoad();
    if (changed) { pushRoadChanged(); }
    document.getElementById("myroad-picker").open = false;
    map.closePopup();
    var status = document.getElementById("myroad-status");
    status.setAttribute("tabindex", "-1");
    status.focus(); // the choice's result is read out next
  }

  function filterChoices() {
    // Every word typed must appear in the road's name or its segment id.
    var words = document.getElementById("road-search").value.toLowerCase().split(/\s+/)
      .filter(function (w) { return w !== ""; });
    document.querySelectorAll("#road-choices li").forEach(function (li) {
      var hay = (li.getAttribute("data-name") + " " + li.getAttribute("data-segment")).toLowerCase();
      li.hidden = !words.every(function (w) { return hay.indexOf(w) >= 0; });
    });
  }

  function drawChoices(features) {
    // Rebuilt only when the roads change, so a refresh does not move the focus away.
    var key = features.map(function (f) { return f.properties.id + ":" + f.properties.name; }).join("|");
    if (key === state.choices) { return; }
    state.choices = key;
    var ul = document.getElementById("road-choices");
    ul.textContent = "";
    // A road often has several segments of one name: those say which segment they are.
    var count = {};
    features.forEach(function (f) { count[f.properties.name] = (count[f.properties.name] || 0) + 1; });
    features.slice().sort(function (a, b) {
      return a.properties.name.localeCompare(b.properties.name, "ja") ||
        (a.properties.id < b.properties.id ? -1 : 1);
    }).forEach(function (f) {
      var p = f.properties, li = el("li");
      var b = el("button", count[p.name] > 1 ? p.name + "（区間 " + p.id + "）" : p.name);
      b.type = "button";
      b.addEventListener("click", function () { chooseRoad(p.id); });
      li.setAttribute("data-segment", p.id);
      li.setAttribute("data-name", p.name);
      li.appendChild(b);
      ul.appendChild(li);
    });
    filterChoices();
  }

  // ---- "Tell me when my road is done": standard Web Push (docs/public.md#web-push). Only
  // on the resident's request is anything sent: the push service's endpoint, its keys
  // and the chosen segment id.
  var PUSH_KEY = "yukimizu.push";
  var pushCapable = "serviceWorker" in navigator && "PushManager" in window &&
    "Notification" in window && window.isSecureContext;

  function pushOn() {
    try { return window.localStorage.getItem(PUSH_KEY) === "1"; } catch (e) { return false; }
  }

  function setPush(on, message) {
    try {
      if (on) { window.localStorage.setItem(PUSH_KEY, "1"); } else { window.localStorage.removeItem(PUSH_KEY); }
    } catch (e) { state.storageFailed = true; }
    drawPush(message);
  }

  function drawPush(message) {
    var box = document.getElementById("push");
    box.hidden = !pushCapable || !state.myRoad;
    document.getElementById("push-toggle").textContent =
      pushOn() ? "通知をやめる" : "除雪が終わったら通知する";
    if (message !== undefined) { document.getElementById("push-status").textContent = message; }
  }

  function postJson(url, doc) {
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                        body: JSON.stringify(doc), cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { var e = new Error("HTTP " + r.status); e.name = "HTTP" + r.status; throw e; }
      });
  }

  function keyBytes(b64) {
    var s = atob(b64.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((b64.length + 3) % 4));
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  }

  function withTimeout(promise) {
    return new Promise(function (resolve, reject) {
      var t = setTimeout(function () {
        var e = new Error("push service"); e.name = "Timeout"; reject(e);
      }, window.yukimizuPushTimeoutMs || 20000);
      promise.then(function (v) { clearTimeout(t); resolve(v); },
                   function (e) { clearTimeout(t); reject(e); });
    });
  }

  function sendSubscription(sub) {
    var j = sub.toJSON();
    return postJson("push/subscribe", { endpoint: j.endpoint, keys: j.keys, segments: [state.myRoad] });
  }

  function pushError(e) {
    var name = (e && e.name) || "Error";
    if (name === "Unavailable") { return "このサイトでは通知を利用できません。"; }
    if (name === "Denied") { return "通知が許可されていません。ブラウザの設定で許可してください。"; }
    if (name === "Timeout" || name === "AbortError") {
      return "通知サービスに接続できませんでした。しばらくしてからお試しください。";
    }
    if (name === "HTTP429" || name === "HTTP503") {
      return "ただいま混み合っています。しばらくしてからお試しください。";
    }
    return "通知を登録できませんでした（" + name + "）。";
  }

  function pushSubscribe() {
    var reg;
    drawPush("通知を準備しています…");
    navigator.serviceWorker.register("sw.js")
      .then(function (r) { reg = r; return navigator.serviceWorker.ready; })
      .then(function () { return fetch("push/key", { cache: "no-cache" }); })
      .then(function (r) {
        if (!r.ok) { var e = new Error("no push"); e.name = "Unavailable"; throw e; }
        return r.text();
      })
      .then(function (key) {
        return Notification.requestPermission().then(function (p) {
          if (p !== "granted") { var e = new Error(p); e.name = "Denied"; throw e; }
          // The browser asks its push service; with none reachable it may never answer.
          return withTimeout(reg.pushManager.subscribe({
            userVisibleOnly: true, applicationServerKey: keyBytes(key.trim()) }));
        });
      })
      .then(sendSubscription)
      .then(function () { setPush(true, "除雪が終わったらこの端末に通知します（今シーズン末まで）。"); })
      .catch(function (e) { setPush(false, pushError(e)); });
  }

  function currentSubscription() {
    return navigator.serviceWorker.getRegistration().then(function (reg) {
      return reg ? reg.pushManager.getSubscription() : null;
    });
  }

  function pushUnsubscribe(message) {
    currentSubscription()
      .then(function (sub) {
        if (!sub) { return null; }
        return postJson("push/unsubscribe", { endpoint: sub.endpoint })
          .then(function () { return sub.unsubscribe(); });
      })
      .then(function () { setPush(false, message); })
      .catch(function (e) { drawPush(pushError(e)); });
  }

  function pushRoadChanged() {
    // A subscribed resident who picks another road: the subscription follows it.
    if (!pushCapable || !pushOn()) { drawPush(); return; }
    if (!state.myRoad) { pushUnsubscribe("通知を停止しました。"); return; }
    currentSubscription()
      .then(function (sub) { return sub ? sendSubscription(sub) : null; })
      .then(function () { drawPush("通知する道路を変更しました。"); })
      .catch(function (e) { drawPush(pushError(e)); });
  }

  document.getElementById("push-toggle").addEventListener("click", function () {
    if (pushOn()) { pushUnsubscribe("通知を停止しました。"); } else { pushSubscribe(); }
  });

  document.getElementById("road-search").addEventListener("input", filterChoices);
  document.getElementById("myroad-clear").addEventListener("click", function () {
    chooseRoad(null);
  });

  function segmentPopup(p) {
    var div = el("div", null, "segment-popup");
    div.appendChild(el("strong", p.name));
    div.appendChild(el("div", p.priority === 1 ? "優先路線（優先度 1）" : "優先度 " + p.priority));
    var when = p.last_plowed ? fmtTime(p.last_plowed) : "記録なし（過去7日）";
    var line = el("div", "最終除雪: " + when, "last-plowed");
    if (p.last_plowed && p.inferred) { line.appendChild(el("span", "（推定）", "inferred")); }
    div.appendChild(line);
    div.appendChild(el("div", p.band_label));
    if (p.eta_label) {
      // When the road will be plowed: words, with the band when there is one.
      div.appendChild(el("div", etaWords(p), "eta eta-" + p.eta));
    }
    var mine = el("button", p.id === state.myRoad ? "わたしの道路です" : "わたしの道路にする",
                  "choose-road");
    mine.type = "button";
    mine.disabled = p.id === state.myRoad;
    mine.addEventListener("click", function () { chooseRoad(p.id); });
    div.appendChild(mine);
    return div;
  }

  function drawSegments(features, legend) {
    var byKey = {};
    legend.forEach(function (b) { byKey[b.key] = b; });
    layers.segments.clearLayers();
    state.segments = {};
    state.props = {};
    var list = document.getElementById("segment-list");
    list.textContent = "";
    features.forEach(function (f) {
      var p = f.properties, b = byKey[p.band];
      var latlngs = f.geometry.coordinates.map(function (c) { return [c[1], c[0]]; });
      // A dark casing under every line keeps light colours (yellow) visible on a pale map.
      L.polyline(latlngs, { color: "#222", weight: 9, opacity: 0.85, interactive: false })
        .addTo(layers.segments);
      var line = L.polyline(latlngs, {
        color: b.color, weight: 6, opacity: 1, dashArray: b.dash || null, lineCap: "butt",
        className: "seg seg-" + p.id + " band-" + p.band,
      }).bindPopup(function () { return segmentPopup(p); });
      line.addTo(layers.segments);
      state.segments[p.id] = line;
      state.props[p.id] = p;
      var item = el("li", p.name + " — " + p.band_label + (p.inferred ? "（推定）" : "") +
                    (p.eta_label ? " — 除雪見込み: " + p.eta_label : ""));
      item.setAttribute("data-segment", p.id);
      if (p.eta) { item.setAttribute("data-eta", p.eta); }
      list.appendChild(item);
    });
  }

  function drawPlows(features) {
    layers.plows.clearLayers();
    features.forEach(function (f) {
      var p = f.properties, c = f.geometry.coordinates;
      var icon = L.divIcon({ className: "plow-icon", html: "車", iconSize: [24, 24] });
      L.marker([c[1], c[0]], { icon: icon, title: p.name, keyboard: false })
        .bindPopup(function () {
          var d = el("div", null, "plow-popup");
          d.appendChild(el("strong", p.name));
          d.appendChild(el("div", "位置: " + fmtTime(p.time)));
          return d;
        })
        .addTo(layers.plows);
    });
  }

  function drawStations(features) {
    layers.stations.clearLayers();
    var tbody = document.querySelector("#stations tbody");
    tbody.textContent = "";
    features.forEach(function (f) {
      var p = f.properties, c = f.geometry.coordinates;
      var depth = p.depth_cm === null ? "—" : p.depth_cm + "cm";
      var icon = L.divIcon({ className: "station-label", html: "", iconSize: null });
      var m = L.marker([c[1], c[0]], { icon: icon, title: p.name, keyboard: false });
      m.on("add", function () { m.getElement().textContent = depth; });
      m.bindPopup(function () {
        var d = el("div", null, "station-popup");
        d.appendChild(el("strong", p.name));
        d.appendChild(el("div", "積雪 " + depth));
        d.appendChild(el("div", "24時間降雪 " + (p.new_24h_cm === null ? "—" : p.new_24h_cm + "cm")));
        d.appendChild(el("div", fmtTime(p.time) + " 時点"));
        return d;
      }).addTo(layers.stations);
      var tr = el("tr");
      tr.appendChild(el("td", p.name));
      tr.appendChild(el("td", depth, "num"));
      tr.appendChild(el("td", p.new_24h_cm === null ? "—" : p.new_24h_cm + "cm", "num"));
      tr.appendChild(el("td", p.time ? fmtTime(p.time).split(" ")[1] : "—"));
      tbody.appendChild(tr);
    });
  }

  function checkStale() {
    var feed = state.feed, notice = document.getElementById("stale");
    if (!feed) { return; }
    // Stale if the builder saw old data, or if this page itself is old (builder stopped,
    // or the visitor's connection is down): judged with the visitor's clock.
    var pageAge = Date.now() - Date.parse(feed.generated_at);
    var stale = feed.stale || pageAge > feed.stale_after_s * 1000 || state.fetchFailed;
    notice.hidden = !stale;
    notice.textContent = stale
      ? "ご注意: 表示中の情報は最新ではない可能性があります（データ時刻 "
        + fmtTime(feed.data_time || feed.generated_at) + "）"
      : "";
  }

  function render(feed) {
    state.feed = feed;
    var by = { segment: [], plow: [], station: [] };
    feed.features.forEach(function (f) { (by[f.properties.kind] || []).push(f); });
    drawLegend(feed.legend);
    drawSegments(by.segment, feed.legend);
    drawChoices(by.segment);
    drawMyRoad();
    drawPush();
    drawPlows(by.plow);
    drawStations(by.station);
    document.getElementById("updated").textContent =
      "更新: " + fmtTime(feed.generated_at) + "（データ " + fmtTime(feed.data_time) + "）";
    document.getElementById("dispatch").textContent = feed.dispatch ? feed.dispatch.text : "";
    if (!state.fitted && by.segment.length) {
      map.fitBounds(layers.segments.getLayers().length
        ? L.featureGroup(layers.segments.getLayers()).getBounds() : null, { padding: [8, 8] });
      state.fitted = true;
    }
    checkStale();
    state.rendered = (state.rendered || 0) + 1;
  }

  function load() {
    // no-cache: revalidate with the server (304 if unchanged), never a stale browser copy.
    fetch(cfg.feed, { cache: "no-cache" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (feed) { state.fetchFailed = false; render(feed); })
      .catch(function () { state.fetchFailed = true; checkStale(); });
  }

  load();
  setInterval(load, Math.max(15, cfg.refresh_s) * 1000);
  setInterval(checkStale, 30 * 1000);
})();
