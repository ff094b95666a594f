"""What the report commands tell office staff on stderr, in Japanese or English.

The files themselves are Japanese (office forms); these are the refusals and warnings
around them (docs/reports.md#refusals-and-warnings). Each message has both languages
so a missing translation cannot happen at run time.
"""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["ja", "en"]
LANGS: Final[tuple[Lang, ...]] = ("ja", "en")

# Exit codes of `yukimizu report …` (docs/reports.md#exit-codes)
EXIT_OK: Final = 0
EXIT_UNWRITABLE: Final = 1  # the file cannot be written (a character shift_jis lacks)
EXIT_REFUSED: Final = 2  # arguments that make no sense, or a config error
EXIT_NO_DATA: Final = 3  # nothing to report: a warning, and nothing written

_TEXT: Final[dict[str, tuple[str, str]]] = {
    "previous_not_before": (
        "前回検針日 {previous} が検針日 {date} より前ではありません。"
        "--previous には検針日より前の日付を指定してください。",
        "the previous reading date {previous} is not before the reading date {date}: "
        "give --previous a date before --date",
    ),
    "future_date": (
        "{what} {date} はまだ来ていません（今日は {today}）。",
        "{what_en} {date} has not come yet (today is {today})",
    ),
    "unknown_district": (
        "地区「{name}」は登録されていません。登録されている地区: {known}",
        "district {name!r} is not in the registry; registered districts: {known}",
    ),
    "unknown_contractor": (
        "業者「{name}」は登録されていません。登録されている業者: {known}",
        "contractor {name!r} is not in the registry; registered contractors: {known}",
    ),
    "not_a_reading_date": (
        "{date} は{where}の検針日ではありません（[reports.meter_reading] の予定）。"
        "予定外の検針には --previous で前回検針日を指定してください。",
        "{date} is not a reading date for {where_en} (schedule [reports.meter_reading]); "
        "give --previous for a reading off the schedule",
    ),
    "from_after_to": (
        "期間の始め {first} が終わり {last} より後です。",
        "the period's start {first} is after its end {last}",
    ),
    "unencodable": (
        "{where}の列「{column}」の {char!r} (U+{code:04X}) は shift_jis (cp932) で書けません。"
        "--encoding utf-8-sig にするか、登録簿の名前を変えてください。何も出力していません。",
        "{where_en}, column {column}: {char!r} (U+{code:04X}) cannot be written in shift_jis "
        "(code page 932); use --encoding utf-8-sig or change the name in the registry",
    ),
    "no_meter_data": (
        "警告: 検針日 {date} 00:00 の指針がどのメーターにもありません"
        "（{count} 台、InfluxDB にその前後 {gap_h:g} 時間の記録なし）。何も出力していません。",
        "warning: no meter has a register at 00:00 on {date} ({count} meters, nothing in "
        "InfluxDB within {gap_h:g} h of it); nothing written",
    ),
    "no_plow_data": (
        "警告: {period}に出動した除雪車の GPS 記録がありません{who}。何も出力していません。",
        "warning: no GPS record of a plow dispatched {period_en}{who_en}; nothing written",
    ),
}


def text(key: str, lang: Lang, **args: object) -> str:
    ja, en = _TEXT[key]
    return (en if lang == "en" else ja).format(**args)


class Refused(Exception):
    """Arguments a report cannot be made from; the message comes in both languages."""

    def __init__(self, key: str, **args: object) -> None:
        super().__init__(text(key, "en", **args))
        self.key = key
        self.args_ = args

    def text(self, lang: Lang) -> str:
        return text(self.key, lang, **self.args_)
