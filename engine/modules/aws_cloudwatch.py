"""Module ``aws_cloudwatch``: CloudWatch Logs log groups and CloudWatch metric alarms.

Tables as in IaSQL v0.1.x's ``aws_cloudwatch`` module (``migration/1678211058198-aws_cloudwatch.ts``):

- ``log_group(id, log_group_name, log_group_arn, creation_time timestamptz, region)``, unique
  ``(log_group_name, region)``. The cloud id is ``(log_group_name, region)``; nothing changes in
  place (a new name is a new log group), ``log_group_arn`` and ``creation_time`` are
  cloud-managed (IaSQL's ``mappers/log_group.ts``).
- ``metric_alarm(id, alarm_name, alarm_arn, alarm_description, actions_enabled (true),
  alarm_actions json, comparison_operator, datapoints_to_alarm, dimensions json,
  evaluate_low_sample_count_percentile, evaluation_periods, extended_statistic,
  insufficient_data_actions json, metric_name, metrics json, namespace, ok_actions json, period,
  statistic, threshold double precision, threshold_metric_id, treat_missing_data, unit, region)``
  with IaSQL's enum types (``metric_alarm_comparison_operator_enum``, ...), unique
  ``(alarm_name, region)``. The cloud id is ``(alarm_name, region)``; every other column changes
  in place through ``put_metric_alarm`` (IaSQL's ``mappers/metric_alarm.ts``). An empty action
  list and NULL are the same.

RPC: ``log_group_tail(log_group_name, region)`` (below): the log group's recent events as rows.
It reads only, so it may be used like any set-returning function (``WHERE``, joins).

moto (5.2.5, the tests' cloud) answers describe_log_groups, create/delete_log_group,
put/describe/delete_metric_alarms and filter_log_events (with events put by put_log_events).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize, rpc_region


class LogGroupMapper(Mapper):
    """``log_group`` rows <-> CloudWatch Logs log groups of the enabled regions."""

    table = "log_group"
    columns = (Col("id", "int", "pk"), Col("log_group_name"), Col("log_group_arn", "text", "cloud"),
               Col("creation_time", "timestamptz", "cloud"), Col("region"))
    key = ("log_group_name", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``log group <name> in <region>``."""
        return f"log group {rec.get('log_group_name')} in {rec.get('region')}"

    @staticmethod
    def _record(lg: dict, region: str) -> dict:
        ms = lg.get("creationTime")
        created = datetime.fromtimestamp(ms / 1000, timezone.utc) if ms is not None else None
        return {"log_group_name": lg["logGroupName"], "log_group_arn": lg.get("arn"), "creation_time": created,
                "region": region}

    async def _get(self, mc: MapperContext, region: str, name: str) -> dict | None:
        for lg in await mc.paginate("logs", region, "describe_log_groups", "logGroups", logGroupNamePrefix=name):
            if lg.get("logGroupName") == name:
                return self._record(lg, region)
        return None

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every log group of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            out += [self._record(lg, region) for lg in await mc.paginate("logs", region, "describe_log_groups", "logGroups")
                    if lg.get("logGroupName")]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the log group; returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        await mc.call("logs", region, "create_log_group", logGroupName=row["log_group_name"])
        rec = await self._get(mc, region, row["log_group_name"])
        if rec is None:
            err = CloudError("ResourceNotFoundException", f"log group {row['log_group_name']} vanished after "
                             "creation", "logs.create_log_group")
            err.left = {"log_group_name": row["log_group_name"], "region": region}
            raise err
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing changes in place: returns the cloud record (the sync writes it back)."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the log group. Raises engine.aws.CloudError."""
        await mc.call("logs", cloud["region"], "delete_log_group", logGroupName=cloud["log_group_name"])


#: (column, kind, put_metric_alarm/describe_alarms field) of the alarm's settings.
ALARM_FIELDS = (
    ("alarm_description", "text", "AlarmDescription"), ("actions_enabled", "bool", "ActionsEnabled"),
    ("alarm_actions", "json", "AlarmActions"), ("comparison_operator", "text", "ComparisonOperator"),
    ("datapoints_to_alarm", "int", "DatapointsToAlarm"), ("dimensions", "json", "Dimensions"),
    ("evaluate_low_sample_count_percentile", "text", "EvaluateLowSampleCountPercentile"),
    ("evaluation_periods", "int", "EvaluationPeriods"), ("extended_statistic", "text", "ExtendedStatistic"),
    ("insufficient_data_actions", "json", "InsufficientDataActions"), ("metric_name", "text", "MetricName"),
    ("metrics", "json", "Metrics"), ("namespace", "text", "Namespace"), ("ok_actions", "json", "OKActions"),
    ("period", "int", "Period"), ("statistic", "text", "Statistic"), ("threshold", "float", "Threshold"),
    ("threshold_metric_id", "text", "ThresholdMetricId"), ("treat_missing_data", "text", "TreatMissingData"),
    ("unit", "text", "Unit"))


def _same(kind: str, a: Any, b: Any) -> bool:
    """Column values compared as ``kind`` (an empty list is NULL; floats as floats)."""
    a = None if a == [] else a
    b = None if b == [] else b
    if kind == "float":
        return (a is None and b is None) or (a is not None and b is not None and float(a) == float(b))
    return normalize(kind, a) == normalize(kind, b)


class MetricAlarmMapper(Mapper):
    """``metric_alarm`` rows <-> CloudWatch metric alarms of the enabled regions."""

    table = "metric_alarm"
    columns = (Col("id", "int", "pk"), Col("alarm_name"), Col("alarm_arn", "text", "cloud"),
               *(Col(c, "text" if k == "float" else k) for c, k, _ in ALARM_FIELDS), Col("region"))
    key = ("alarm_name", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``metric alarm <name> in <region>``."""
        return f"metric alarm {rec.get('alarm_name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when every setting matches (IaSQL's ``equals``)."""
        return all(_same(k, row.get(c), cloud.get(c)) for c, k, _ in ALARM_FIELDS)

    def synced_equals(self, row: dict, cloud: dict) -> bool:
        """True when writing the cloud record back would change nothing."""
        return self.equals(row, cloud) and all(row.get(c) == cloud.get(c) for c in ("alarm_name", "alarm_arn", "region"))

    @staticmethod
    def _record(a: dict, region: str) -> dict:
        rec = {"alarm_name": a["AlarmName"], "alarm_arn": a.get("AlarmArn"), "region": region}
        for c, _, f in ALARM_FIELDS:
            v = a.get(f)
            rec[c] = None if v == [] else v
        return rec

    async def _get(self, mc: MapperContext, region: str, name: str) -> dict | None:
        res = await mc.call("cloudwatch", region, "describe_alarms", AlarmNames=[name])
        found = [a for a in res.get("MetricAlarms", []) if a.get("AlarmName") == name]
        return self._record(found[0], region) if found else None

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every metric alarm of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            out += [self._record(a, region) for a in await mc.paginate("cloudwatch", region, "describe_alarms",
                                                                       "MetricAlarms") if a.get("AlarmName")]
        return out

    async def _put(self, mc: MapperContext, region: str, row: dict) -> dict:
        kw: dict[str, Any] = {"AlarmName": row["alarm_name"]}
        for c, k, f in ALARM_FIELDS:
            v = row.get(c)
            if v is None:
                continue
            kw[f] = json.loads(v) if k == "json" and isinstance(v, str) else float(v) if k == "float" else v
        await mc.call("cloudwatch", region, "put_metric_alarm", **kw)
        rec = await self._get(mc, region, row["alarm_name"])
        if rec is None:
            err = CloudError("ResourceNotFound", f"metric alarm {row['alarm_name']} vanished after put_metric_alarm",
                             "cloudwatch.put_metric_alarm")
            err.left = {"alarm_name": row["alarm_name"], "region": region}
            raise err
        return rec

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the alarm (``put_metric_alarm``); returns its record. Raises engine.aws.CloudError."""
        return await self._put(mc, row.get("region") or mc.default_region, row)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Put the row's settings over the alarm; returns the new record. Raises engine.aws.CloudError."""
        return await self._put(mc, cloud["region"], row)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the alarm. Raises engine.aws.CloudError."""
        await mc.call("cloudwatch", cloud["region"], "delete_alarms", AlarmNames=[cloud["alarm_name"]])


_ENUMS = (
    ("metric_alarm_comparison_operator_enum", ("GreaterThanOrEqualToThreshold", "GreaterThanThreshold",
     "GreaterThanUpperThreshold", "LessThanLowerOrGreaterThanUpperThreshold", "LessThanLowerThreshold",
     "LessThanOrEqualToThreshold", "LessThanThreshold")),
    ("metric_alarm_evaluate_low_sample_count_percentile_enum", ("evaluate", "ignore")),
    ("metric_alarm_statistic_enum", ("Average", "Maximum", "Minimum", "SampleCount", "Sum")),
    ("metric_alarm_treat_missing_data_enum", ("breaching", "notBreaching", "ignore", "missing")),
    ("metric_alarm_unit_enum", ("Bits", "Bits/Second", "Bytes", "Bytes/Second", "Count", "Count/Second", "Gigabits",
     "Gigabits/Second", "Gigabytes", "Gigabytes/Second", "Kilobits", "Kilobits/Second", "Kilobytes",
     "Kilobytes/Second", "Megabits", "Megabits/Second", "Megabytes", "Megabytes/Second", "Microseconds",
     "Milliseconds", "None", "Percent", "Seconds", "Terabits", "Terabits/Second", "Terabytes", "Terabytes/Second")),
)

#: IaSQL's opinionated limit of one ``filter_log_events`` page (``log_group_tail.ts``)
TAIL_LIMIT = 1000


async def log_group_tail(state: Any, ctx: Any, log_group_name: Any, region: Any = None) -> list[tuple]:
    """IaSQL's ``log_group_tail`` RPC (``src/modules/aws_cloudwatch/rpcs/log_group_tail.ts``): the
    recent events of CloudWatch Logs log group ``log_group_name`` in ``region``, as the caller.

    Takes the engine state, the ``CallContext``, the ``varchar`` log group name and the
    ``varchar`` region (NULL, the declared default, means ``default_aws_region()``, which is
    IaSQL's default). Calls ``filter_log_events`` once with IaSQL's limit of 1000 events (one page,
    as IaSQL: no further pages are read) and returns one row per event, in the order CloudWatch
    Logs gives them: (event_id varchar, log_stream_name varchar, event_timestamp timestamptz,
    message varchar), the timestamp converted from the event's epoch milliseconds. A log group
    without events gives no rows. Writes nothing (not ``mutating``). Raises EngineError 22004
    (IaSQL's ``Invalid log group name`` when the name is NULL or empty), 22023 (``region`` is not a
    region of ``aws_regions``), 42704 (no such log group in that region), 58000 (any other AWS
    failure), 57014 (cancelled).
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not log_group_name:
        raise EngineError("22004", "Invalid log group name")
    async with EngineSession(ctx, state, "log_group_tail") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "log_group_tail", region)
        s.check_cancelled()
        try:
            res = await mc.call("logs", region, "filter_log_events", logGroupName=log_group_name, limit=TAIL_LIMIT)
        except CloudError as e:
            if e.code == "ResourceNotFoundException":
                raise EngineError("42704", f"log group {log_group_name} does not exist in {region}",
                                  detail=str(e)) from None
            raise
        out = []
        for ev in res.get("events") or []:
            ms = ev.get("timestamp")
            out.append((ev.get("eventId"), ev.get("logStreamName"),
                        datetime.fromtimestamp(ms / 1000, timezone.utc) if ms is not None else None, ev.get("message")))
        return out


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    return (
        Function(
            name="log_group_tail",
            arguments=(Argument("log_group_name", "varchar"), Argument("region", "varchar", default=None)),
            columns=(Column("event_id", "varchar"), Column("log_stream_name", "varchar"),
                     Column("event_timestamp", "timestamptz"), Column("message", "varchar")),
            impl=log_group_tail,
            description="Returns the recent events (at most 1000) of a CloudWatch Logs log group",
            sample_usage="SELECT * FROM log_group_tail('my-log-group')",
        ),
    )


MODULE = Module(
    name="aws_cloudwatch",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.log_group (
             id serial PRIMARY KEY,
             log_group_name character varying NOT NULL,
             log_group_arn character varying,
             creation_time timestamp with time zone,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region))""",
        "CREATE UNIQUE INDEX uq_log_group_name_region ON public.log_group (log_group_name, region)",
        *(f"CREATE TYPE public.{name} AS ENUM ({', '.join(repr(v) for v in values)})" for name, values in _ENUMS),
        """CREATE TABLE public.metric_alarm (
             id serial PRIMARY KEY,
             alarm_name character varying NOT NULL,
             alarm_arn character varying,
             alarm_description character varying,
             actions_enabled boolean NOT NULL DEFAULT true,
             alarm_actions json,
             comparison_operator public.metric_alarm_comparison_operator_enum,
             datapoints_to_alarm integer,
             dimensions json,
             evaluate_low_sample_count_percentile public.metric_alarm_evaluate_low_sample_count_percentile_enum,
             evaluation_periods integer,
             extended_statistic character varying,
             insufficient_data_actions json,
             metric_name character varying,
             metrics json,
             namespace character varying,
             ok_actions json,
             period integer,
             statistic public.metric_alarm_statistic_enum,
             threshold double precision,
             threshold_metric_id character varying,
             treat_missing_data public.metric_alarm_treat_missing_data_enum,
             unit public.metric_alarm_unit_enum,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region))""",
        "CREATE UNIQUE INDEX uq_metric_alarm_name_region ON public.metric_alarm (alarm_name, region)",
    ),
    uninstall_sql=("DROP TABLE public.metric_alarm", *(f"DROP TYPE public.{name}" for name, _ in _ENUMS),
                   "DROP TABLE public.log_group"),
    mappers=(LogGroupMapper(), MetricAlarmMapper()),
    description="CloudWatch log groups and metric alarms",
    rpcs=_rpcs(),
)
