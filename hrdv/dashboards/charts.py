"""Each kind of chart of dashboards/*.yaml as Superset chart params (6.1.0 control names).

expand() returns rows of charts: one row for a plain chart, several for `indicators`, which makes a
chart of every indicator of a family (a new catalog entry appears with no hand work).
"""
from __future__ import annotations

import hashlib

from hrdv.catalog import DimensionSet, Family, Indicator
from hrdv.dashboards import spec
from hrdv.dashboards.assets import (MSK, PROVISIONAL_NOTE, STATUS_COLOURS, Builder, ChartRef, DashboardError,
                                    axis_format, label, number_format)
from hrdv.dashboards.spec import TIME_RANGES

Rows = list[list[ChartRef]]
STAGE_METRIC = {"metric_name": "age_s_max", "verbose_name": "Возраст, с", "expression": "MAX(age_s)",
                "d3format": ",.1f", "description": "Секунд с самой новой фиксации в CRM, которую этап содержит",
                "metric_type": None, "extra": {}, "warning_text": None}


def where(subject: str, operator: str, comparator: object) -> dict:
    return {"clause": "WHERE", "expressionType": "SIMPLE", "subject": subject, "operator": operator,
            "comparator": comparator, "isExtra": False, "isNew": False, "sqlExpression": None,
            "filterOptionName": f"{subject}_{operator}".replace(" ", "_")}


def where_sql(expression: str) -> dict:
    return {"clause": "WHERE", "expressionType": "SQL", "sqlExpression": expression, "subject": None,
            "operator": None, "comparator": None, "isExtra": False, "isNew": False,
            "filterOptionName": "sql_" + hashlib.sha1(expression.encode()).hexdigest()[:8]}


def period(column: str, time_range: str) -> dict:
    return where(column, "TEMPORAL_RANGE", TIME_RANGES[time_range])


def _series_filters(indicators: list[str], dimension_set: str) -> list[dict]:
    return [where("dimension_set", "==", dimension_set), where("indicator", "IN", indicators)]


def _indicator(builder: Builder, family_name: str, indicator_id: str) -> tuple[Family, Indicator]:
    family = builder.catalog.families[family_name]
    return family, next(i for i in family.indicators if i.id == indicator_id)


def _dims(builder: Builder, dimension_set: str) -> frozenset[str]:
    return builder.catalog.within(DimensionSet.parse(dimension_set).dimensions)


def number(builder: Builder, dashboard: str, chart: spec.Number) -> Rows:
    family, indicator = _indicator(builder, chart.family, chart.indicator)
    if chart.source == "today" and indicator.kind not in ("count", "sum", "average", "ratio", "deadline", "rate", "snapshot"):
        raise DashboardError(f"dashboard {dashboard}: {indicator.id} ({indicator.kind}) cannot be summed over "
                             "today's windows; show it per window (series) or per day (table)")
    dataset = builder.family_dataset(family, chart.source)
    filters = _series_filters([indicator.id], chart.dimension_set)
    # Short: Big Number shrinks a subtitle to the card's width (the description says it in full).
    subtitle = "с 00:00 МСК, вкл. предварительные"
    if chart.source == "today":
        filters.append(where("day", "==", "сегодня"))
    else:
        filters.append(period("period_msk", "today"))
        subtitle = "сегодня, МСК, опубликованное"
    params = {"metric": indicator.id, "adhoc_filters": filters, "time_range": "No filter",
              "header_font_size": 0.3, "subtitle": subtitle, "subtitle_font_size": 0.15,
              "show_metric_name": False, "y_axis_format": number_format(indicator),
              "force_timestamp_formatting": False}
    ref = builder.chart(dashboard, f"number:{chart.source}:{indicator.id}:{chart.dimension_set}", label(indicator),
                        "big_number_total", dataset, params,
                        f"{indicator.description} Сегодня с 00:00, {MSK}; {PROVISIONAL_NOTE}.",
                        _dims(builder, chart.dimension_set), period=False, height=30)
    return [[_sized(ref, chart.width)]]


def today(builder: Builder, dashboard: str, chart: spec.Today) -> Rows:
    family = builder.catalog.families[chart.family]
    dataset = builder.family_dataset(family, "today")
    params = {"query_mode": "aggregate", "groupby": ["day"], "metrics": chart.indicators,
              "adhoc_filters": _series_filters(chart.indicators, chart.dimension_set),
              "time_range": "No filter", "order_by_cols": [], "order_desc": True, "row_limit": 10,
              "server_pagination": False, "include_search": False, "show_cell_bars": False,
              "column_config": {}, "table_timestamp_format": "%d.%m.%Y %H:%M"}
    title = f"{family.spec.names.ru}: сегодня и в это же время неделю назад"
    ref = builder.chart(dashboard, f"today:{family.name}:{'+'.join(chart.indicators)}:{chart.dimension_set}",
                        title, "table", dataset, params,
                        f"Сегодня с 00:00 до текущего момента и тот же промежуток семь дней назад; {MSK}; "
                        f"сегодняшние значения — {PROVISIONAL_NOTE}",
                        _dims(builder, chart.dimension_set), period=False, height=30)
    return [[_sized(ref, chart.width)]]


def _series_chart(builder: Builder, dashboard: str, family: Family, indicator: Indicator, dimension_set: str,
                  time_range: str, width: int) -> ChartRef:
    dataset = builder.family_dataset(family, "window")
    params = {"x_axis": "period_msk", "metrics": [indicator.id], "groupby": ["data_status"],
              "adhoc_filters": [*_series_filters([indicator.id], dimension_set),
                                period("period_msk", time_range)],
              "time_range": "No filter", "row_limit": 10000, "stack": "Stack", "show_legend": True,
              "legendType": "plain", "legendOrientation": "top", "rich_tooltip": True,
              "y_axis_format": axis_format(indicator), "x_axis_time_format": "%H:%M",
              "tooltipTimeFormat": "%d.%m.%Y %H:%M", "truncateYAxis": False, "zoomable": False,
              "color_scheme": "supersetColors", "label_colors": STATUS_COLOURS,
              "x_axis_title": f"Начало окна, {MSK}", "x_axis_title_margin": 30}
    return _sized(builder.chart(
        dashboard, f"series:{family.name}:{indicator.id}:{dimension_set}:{time_range}", label(indicator),
        "echarts_timeseries_bar", dataset, params,
        f"{indicator.description} По окнам; оранжевым — предварительные значения открытого окна.",
        _dims(builder, dimension_set), period=True, height=45), width)


def series(builder: Builder, dashboard: str, chart: spec.Series) -> Rows:
    family, indicator = _indicator(builder, chart.family, chart.indicator)
    return [[_series_chart(builder, dashboard, family, indicator, chart.dimension_set, chart.time_range, chart.width)]]


def _table_chart(builder: Builder, dashboard: str, family: Family, indicators: list[str], dimension_set: str,
                 source: str, time_range: str, width: int, title: str | None = None) -> ChartRef:
    dataset = builder.family_dataset(family, source)
    dims = DimensionSet.parse(dimension_set).dimensions
    groupby = list(dims) + (["data_status"] if source == "window" else [])
    params = {"query_mode": "aggregate", "groupby": groupby, "metrics": indicators,
              "adhoc_filters": [*_series_filters(indicators, dimension_set),
                                period("period_msk", time_range)],
              "time_range": "No filter", "timeseries_limit_metric": indicators[0], "order_desc": True,
              "row_limit": 1000, "server_pagination": False, "page_length": 20, "include_search": True,
              "show_cell_bars": True, "column_config": {}, "table_timestamp_format": "%d.%m.%Y %H:%M"}
    names = " × ".join(builder.catalog.dimensions[d].names.ru for d in dims) or "итого"
    when = {"today": "сегодня", "last_day": "за последние сутки", "last_week": "за 7 дней"}[time_range]
    ref = builder.chart(
        dashboard, f"table:{family.name}:{source}:{dimension_set}:{'+'.join(indicators)}:{time_range}",
        title or f"{family.spec.names.ru} по измерению «{names}», {when}", "table", dataset, params,
        f"Сутки по московскому времени; значения дня — из опубликованных окон ({MSK}). "
        "Щелчок по строке отбирает её значение на диаграммах, разрезанных так же или мельче.",
        _dims(builder, dimension_set), period=True, height=50)
    ref.emits = tuple(dims)
    return _sized(ref, width)


def table(builder: Builder, dashboard: str, chart: spec.Table) -> Rows:
    family = builder.catalog.families[chart.family]
    return [[_table_chart(builder, dashboard, family, chart.indicators, chart.dimension_set, chart.source,
                          chart.time_range, chart.width)]]


def country_map(builder: Builder, dashboard: str, chart: spec.Map) -> Rows:
    family, indicator = _indicator(builder, chart.family, chart.indicator)
    dataset = builder.family_dataset(family, chart.source)
    params = {"select_country": "russia", "entity": "region_map_code", "metric": indicator.id,
              "adhoc_filters": [*_series_filters([indicator.id], "region"),
                                period("period_msk", chart.time_range)],
              "time_range": "No filter", "number_format": number_format(indicator),
              "linear_color_scheme": "superset_seq_1"}
    ref = builder.chart(dashboard, f"map:{family.name}:{indicator.id}:{chart.time_range}",
                        f"{label(indicator)} — карта субъектов РФ", "country_map", dataset, params,
                        f"{indicator.description} Сутки по московскому времени.",
                        _dims(builder, "region"), period=True, height=60)
    return [[_sized(ref, chart.width)]]


def indicators(builder: Builder, dashboard: str, chart: spec.Indicators) -> Rows:
    """Every indicator of the family: per window over time if it has the chart's dimension set,
    else (distributions) per value of its first set, today."""
    family = builder.catalog.families[chart.family]
    wanted = DimensionSet.parse(chart.dimension_set)
    width = 12 // chart.per_row
    refs = []
    for indicator in family.indicators:
        sets = family.sets_of(indicator)
        if wanted in sets:
            refs.append(_series_chart(builder, dashboard, family, indicator, chart.dimension_set, chart.time_range, width))
        else:
            refs.append(_table_chart(builder, dashboard, family, [indicator.id], sets[0].name, "day", "today", width,
                                     title=f"{label(indicator)} — сегодня по измерению «"
                                           f"{' × '.join(builder.catalog.dimensions[d].names.ru for d in sets[0].dimensions)}»"))
    return [refs[i:i + chart.per_row] for i in range(0, len(refs), chart.per_row)] or [[]]


def bottlenecks(builder: Builder, dashboard: str, chart: spec.Bottlenecks) -> Rows:
    columns = ["period_msk", "period_start", "bottleneck", "bottleneck_name", "indicator", "dimension_set",
               "member_code", "member", "value", "rank", "value_week_before", "change_week", "usual_median",
               "usual_spread", "usual_points", "unusual", "unusual_text"]
    verbose = {"period_msk": "Период (МСК)", "bottleneck_name": "Узкое место", "member": "Кто", "value": "Значение",
               "rank": "Место", "value_week_before": "Неделю назад", "usual_median": "Обычно",
               "unusual_text": "Отклонение"}
    dataset = builder.plain_dataset(f"report_bottlenecks_{chart.grain}", columns, verbose, [],
                                    f"Узкие места по {'окнам' if chart.grain == 'window' else 'дням'}, {MSK}")
    shown = ["bottleneck_name", "rank", "member", "value", "value_week_before", "usual_median", "unusual_text"]
    if chart.grain == "window":
        shown.insert(0, "period_msk")
    filters = [where_sql(f"rank <= {chart.top}"), period("period_msk", chart.time_range)]
    if chart.unusual_only:
        filters.append(where("unusual", "IS NOT NULL", None))
    params = {"query_mode": "raw", "all_columns": shown, "adhoc_filters": filters, "time_range": "No filter",
              "order_by_cols": ['["period_msk", false]', '["bottleneck_name", true]', '["rank", true]'],
              "row_limit": 500, "server_pagination": False, "page_length": 25, "include_search": True,
              "column_config": {c: {"d3NumberFormat": ",.2f"} for c in ("value", "value_week_before", "usual_median")},
              "table_timestamp_format": "%d.%m.%Y %H:%M"}
    title = ("Отклонения от обычного по окнам, последние сутки" if chart.unusual_only
             else f"Первые {chart.top} в каждом рейтинге, {'сегодня' if chart.grain == 'day' else 'по окнам'}")
    ref = builder.chart(dashboard, f"bottlenecks:{chart.grain}:{chart.top}:{chart.unusual_only}", title, "table",
                        dataset, params, f"catalog/bottlenecks.yaml; {MSK}", period=True, height=60)
    return [[_sized(ref, chart.width)]]


def freshness(builder: Builder, dashboard: str, chart: spec.Freshness) -> Rows:
    stages = builder.plain_dataset(
        "report_freshness", ["observed_msk", "observed_at", "stage", "position", "stage_name", "newest_msk",
                             "age_s", "is_latest"],
        {"observed_msk": "Замер (МСК)", "stage_name": "Этап", "newest_msk": "Самое новое (МСК)", "age_s": "Возраст, с"},
        [STAGE_METRIC, {**STAGE_METRIC, "metric_name": "provisional_age_s", "verbose_name": "Возраст предварительных витрин, с",
                        "expression": "MAX(age_s) FILTER (WHERE stage = 'provisional' AND is_latest)"}],
        f"Свежесть этапов конвейера, каждые 30 с; {MSK}")
    publications = builder.plain_dataset(
        "report_publications", ["window_msk", "window_start", "window_end", "published_msk", "delay_s", "run_id"],
        {"window_msk": "Окно (МСК)", "published_msk": "Опубликовано (МСК)", "delay_s": "Через, с после закрытия"},
        [], f"Опубликованные окна; {MSK}")
    dead = builder.plain_dataset(
        "report_dead_letters", ["topic", "reason", "messages", "newest_msk", "counted_msk"],
        {"topic": "Топик", "reason": "Причина", "messages": "Сообщений", "newest_msk": "Последнее (МСК)"},
        [{"metric_name": "dead_letters", "verbose_name": "Мёртвых писем", "expression": "COALESCE(SUM(messages), 0)",
          "d3format": ",d", "description": "Сообщения, которые не удалось разобрать (hrdv.dead_letters)",
          "metric_type": None, "extra": {}, "warning_text": None}],
        f"Мёртвые письма по топикам и причинам; {MSK}")
    raw = {"query_mode": "raw", "time_range": "No filter", "server_pagination": False, "include_search": False,
           "table_timestamp_format": "%d.%m.%Y %H:%M:%S", "column_config": {}}
    made = {
        "stages": ("Этапы конвейера: возраст данных сейчас", "table", stages,
                   {**raw, "all_columns": ["stage_name", "newest_msk", "age_s"], "adhoc_filters": [where("is_latest", "IS TRUE", None)],
                    "order_by_cols": ['["position", true]'], "row_limit": 10,
                    "column_config": {"age_s": {"d3NumberFormat": ",.1f"}}}),
        "provisional_age": ("Возраст предварительных витрин, с", "big_number_total", stages,
                            {"metric": "provisional_age_s", "adhoc_filters": [], "y_axis_format": ",.1f",
                             "header_font_size": 0.3, "subtitle": "Обещание: не старше 30 с", "subtitle_font_size": 0.15}),
        "dead_letters_total": ("Мёртвые письма", "big_number_total", dead,
                               {"metric": "dead_letters", "adhoc_filters": [], "y_axis_format": ",d",
                                "header_font_size": 0.3, "subtitle": "Все топики; `hrdv dead-letters summary`",
                                "subtitle_font_size": 0.15}),
        "stage_history": ("Возраст данных по этапам, последние сутки", "echarts_timeseries_line", stages,
                          {"x_axis": "observed_msk", "metrics": ["age_s_max"], "groupby": ["stage_name"],
                           "adhoc_filters": [period("observed_msk", "last_day")], "row_limit": 50000,
                           "y_axis_format": ",.0f", "x_axis_time_format": "%H:%M", "tooltipTimeFormat": "%d.%m.%Y %H:%M:%S",
                           "show_legend": True, "legendOrientation": "top", "rich_tooltip": True, "logAxis": True,
                           "x_axis_title": f"Время замера, {MSK}", "x_axis_title_margin": 30}),
        "publications": ("Последние опубликованные окна", "table", publications,
                         {**raw, "all_columns": ["window_msk", "published_msk", "delay_s"], "adhoc_filters": [],
                          "order_by_cols": ['["window_start", false]'], "row_limit": 20,
                          "column_config": {"delay_s": {"d3NumberFormat": ",.1f"}}}),
        "dead_letters": ("Мёртвые письма по топикам и причинам", "table", dead,
                         {**raw, "all_columns": ["topic", "reason", "messages", "newest_msk"], "adhoc_filters": [],
                          "order_by_cols": ['["messages", false]'], "row_limit": 100,
                          "column_config": {"messages": {"d3NumberFormat": ",d"}}}),
    }
    title, viz, dataset, params = made[chart.show]
    ref = builder.chart(dashboard, f"freshness:{chart.show}", title, viz, dataset, params,
                        "hrdv status показывает то же в терминале.", period=False,
                        height=30 if viz == "big_number_total" else 50)
    return [[_sized(ref, chart.width)]]


def _sized(ref: ChartRef, width: int) -> ChartRef:
    ref.width = width
    return ref


KINDS = {"number": number, "today": today, "series": series, "table": table, "map": country_map,
         "indicators": indicators, "bottlenecks": bottlenecks, "freshness": freshness}


def expand(builder: Builder, dashboard: str, chart) -> Rows:
    return KINDS[chart.chart](builder, dashboard, chart)
