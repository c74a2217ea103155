"""The plugin's macros and Grafana's variable interpolation, expanded as documented
(grafana/clickhouse-datasource pkg/macros/macros.go and CHDatasource.ts, v4.20)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cvat_analytics_generator.grafana_macros import ALL, Variable, expand

FROM = datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)   # 1704067200.25
TO = datetime(2024, 1, 8, 12, 30, 0, tzinfo=timezone.utc)           # 1704717000


def x(sql, interval=60, **variables):
    return expand(sql, FROM, TO, interval, variables)


@pytest.mark.parametrize("sql, expected", [
    ("$__timeFilter(timestamp)", "timestamp >= toDateTime(1704067200) AND timestamp <= toDateTime(1704717000)"),
    ("$__timeFilter_ms(ts)", "ts >= fromUnixTimestamp64Milli(1704067200250) AND ts <= fromUnixTimestamp64Milli(1704717000000)"),
    ("$__dateFilter(d)", "d >= toDate('2024-01-01') AND d <= toDate('2024-01-08')"),
    ("$__dateTimeFilter(d, t)", "(d >= toDate('2024-01-01') AND d <= toDate('2024-01-08')) AND "
                                "(t >= toDateTime(1704067200) AND t <= toDateTime(1704717000))"),
    ("$__dt(d, t)", "(d >= toDate('2024-01-01') AND d <= toDate('2024-01-08')) AND "
                    "(t >= toDateTime(1704067200) AND t <= toDateTime(1704717000))"),
    ("$__fromTime, $__toTime", "toDateTime(1704067200), toDateTime(1704717000)"),
    ("$__fromTime_ms, $__toTime_ms", "fromUnixTimestamp64Milli(1704067200250), fromUnixTimestamp64Milli(1704717000000)"),
    ("$__interval_s", "60"),
    ("$__timeInterval(timestamp)", "toStartOfInterval(toDateTime(timestamp), INTERVAL 60 second)"),
    ("$__timeInterval_ms(timestamp)", "toStartOfInterval(toDateTime64(timestamp, 3), INTERVAL 60000 millisecond)"),
    ("$__timeFrom(t) AND $__timeTo(t)", "t >= toDateTime(1704067200) AND t <= toDateTime(1704717000)"),
    ("$__timeGroup(t, '5m')", "toStartOfInterval(toDateTime(t), INTERVAL 300 second)"),
    # Nested: the inner macro expands first (v4.20, #2043).
    ("$__timeInterval(coalesce($__fromTime, t))",
     "toStartOfInterval(toDateTime(coalesce(toDateTime(1704067200), t)), INTERVAL 60 second)"),
])
def test_backend_macros(sql, expected):
    assert x(sql) == expected


def test_interval_is_at_least_one_second():
    assert x("$__interval_s $__timeInterval(t)", interval=0) == "1 toStartOfInterval(toDateTime(t), INTERVAL 1 second)"


def test_grafana_builtin_interval_variables_are_not_confused_with_interval_s():
    assert x("$__interval $__interval_ms $__interval_s", interval=3600) == "1h 3600000 3600"
    assert x("$__from $__to") == "1704067200250 1704717000000"


def test_conditional_all_with_all_selected_is_1_eq_1():
    sql = "WHERE $__conditionalAll(user_id IN (${users}), $users) AND x"
    assert x(sql, users=Variable(ALL)) == "WHERE 1=1 AND x"
    assert x(sql, users=Variable([ALL])) == "WHERE 1=1 AND x"
    assert x(sql, users=Variable("")) == "WHERE 1=1 AND x"


def test_conditional_all_with_values_keeps_the_condition_and_interpolates():
    sql = "WHERE $__conditionalAll(user_id IN (${users}), $users)"
    assert x(sql, users=Variable(["5"])) == "WHERE user_id IN ('5')"
    assert x(sql, users=Variable(["5", "7"])) == "WHERE user_id IN ('5','7')"


def test_conditional_all_condition_may_contain_commas_and_parentheses():
    sql = "$__conditionalAll(JSONExtractString(payload, 'message') IN (${errors}), $errors)"
    assert x(sql, errors=Variable(["a, b (c)"])) == "JSONExtractString(payload, 'message') IN ('a, b (c)')"
    assert x(sql, errors=Variable(ALL)) == "1=1"


def test_variable_interpolation_single_multi_and_all():
    assert x("id = $job", job=Variable("12")) == "id = 12"                 # single value: as it is
    assert x("id IN (${jobs})", jobs=Variable(["1", "2"])) == "id IN ('1','2')"  # multi: quoted list
    assert x("[[jobs]]", jobs=Variable(["3"])) == "'3'"
    # "All" without conditionalAll: the custom all value, else every option
    assert x("id IN ($jobs)", jobs=Variable(ALL, all_value="-1")) == "id IN (-1)"
    assert x("id IN ($jobs)", jobs=Variable(ALL, options=["4", "5"])) == "id IN ('4','5')"


def test_unknown_variables_and_macros_stay():
    assert x("$nope ${nope}") == "$nope ${nope}"


# --- values go in last, as literals (a stored value is data, never SQL or a macro)

def test_a_value_holding_a_macro_is_not_expanded():
    sql = "WHERE m IN (${errors}) AND $__timeFilter(t)"
    value = "boom $__timeFilter( $__fromTime ${errors} $errors"
    out = x(sql, errors=Variable([value]))
    assert out == f"WHERE m IN ('{value}') AND t >= toDateTime(1704067200) AND t <= toDateTime(1704717000)"


def test_nested_macro_values_do_not_grow_the_sql():
    value = "$__timeInterval(" * 40 + "x" + ")" * 40
    out = x("SELECT ${errors}, $__interval_s", errors=Variable([value]))
    assert out == f"SELECT '{value}', 60"


def test_a_value_that_looks_like_a_placeholder_stays_itself():
    out = x("${a} ${b}", a=Variable(["\x001\x00"]), b=Variable(["B"]))
    assert out == "'\x001\x00' 'B'"


def test_a_value_inside_a_macro_argument_is_put_in_after_the_macro():
    # The macro's argument parsing never sees the value's quotes or parentheses.
    out = x("$__timeInterval(${col})", col=Variable("a) , ('"))
    assert out == "toStartOfInterval(toDateTime(a) , ('), INTERVAL 60 second)"
