"""Module ``aws_sqs``: SQS queues.

Table ``queue`` as in IaSQL v0.1.x's ``aws_sqs`` module (``migration/1676629477499-aws_sqs.ts``,
``sql/after_install.sql``): ``id`` SERIAL, ``url`` and ``arn`` (cloud-managed), ``name``,
``fifo_queue`` (false), ``visibility_timeout`` (30), ``delay_seconds`` (0),
``receive_message_wait_time_seconds`` (0), ``message_retention_period`` (345600),
``maximum_message_size`` (262144), ``policy`` json and ``region``. A trigger refuses a FIFO queue
whose name does not end in ``.fifo`` and the other way round (SQLSTATE P0001), as IaSQL's does.

Follows IaSQL's ``mappers/queue.ts``: the cloud id is the queue URL (with the region, since a
URL need not name one); a new ``name``, ``fifo_queue`` or ``region`` replaces the queue (delete +
create), the other attributes change in place (``set_queue_attributes``). A queue created with
no ``policy`` gets IaSQL's default one (only the caller's identity may use it, from
``sts.get_caller_identity``), written back by the commit's sync. Unlike IaSQL, a replace that
keeps the name does not wait the 60 s AWS asks between deleting a queue and creating one of the
same name (AWS then answers ``QueueDeletedRecently``, SQLSTATE 58000; commit again later).
"""

from __future__ import annotations

import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import (
    Col,
    Mapper,
    MapperContext,
    Module,
    json_or_text,
    normalize,
    read_back_or_remove,
)

#: (column, SQS attribute name) of the integer attributes, in IaSQL's order.
INT_ATTRS = (("visibility_timeout", "VisibilityTimeout"), ("delay_seconds", "DelaySeconds"),
             ("receive_message_wait_time_seconds", "ReceiveMessageWaitTimeSeconds"),
             ("message_retention_period", "MessageRetentionPeriod"),
             ("maximum_message_size", "MaximumMessageSize"))




class QueueMapper(Mapper):
    """``queue`` rows <-> SQS queues of the enabled regions (list_queues, get_queue_attributes)."""

    table = "queue"
    columns = (Col("id", "int", "pk"), Col("url", "text", "cloud"), Col("name"), Col("fifo_queue", "bool"),
               *(Col(c, "int") for c, _ in INT_ATTRS), Col("policy", "json"), Col("arn", "text", "cloud"),
               Col("region"))
    key = ("url", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``queue <name> in <region>``."""
        return f"queue {rec.get('name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when name, FIFO flag, the integer attributes and the policy match (IaSQL's
        ``equals``); a row without a policy matches any policy (the default one is written back)."""
        if any(row.get(c) != cloud.get(c) for c in ("name", "region")):
            return False
        if bool(row.get("fifo_queue")) != bool(cloud.get("fifo_queue")):
            return False
        if any(normalize("int", row.get(c)) != normalize("int", cloud.get(c)) for c, _ in INT_ATTRS):
            return False
        return row.get("policy") is None or normalize("json", row.get("policy")) == normalize("json", cloud.get("policy"))

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new name, FIFO flag or region needs a new queue (IaSQL's ``updateOrReplace``)."""
        return (row.get("name") != cloud.get("name") or bool(row.get("fifo_queue")) != bool(cloud.get("fifo_queue"))
                or row.get("region") != cloud.get("region"))

    async def _record(self, mc: MapperContext, region: str, url: str) -> dict:
        """The record of the queue at ``url`` (raises CloudError, e.g. a queue deleted meanwhile)."""
        res = await mc.call("sqs", region, "get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
        a = res.get("Attributes") or {}
        arn = a.get("QueueArn")
        name = arn.rsplit(":", 1)[-1] if arn else url.rstrip("/").rsplit("/", 1)[-1]
        rec = {"url": url, "name": name, "fifo_queue": name.endswith(".fifo"), "arn": arn, "region": region,
               "policy": json_or_text(a.get("Policy")) if a.get("Policy") else None}
        for col, attr in INT_ATTRS:
            rec[col] = int(a[attr]) if a.get(attr) is not None else None
        return rec

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every queue of the enabled regions; a queue deleted between the list and its read is
        skipped (as IaSQL does). Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            for url in await mc.paginate("sqs", region, "list_queues", "QueueUrls"):
                try:
                    out.append(await self._record(mc, region, url))
                except CloudError as e:
                    if e.code not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                        raise
        return out

    async def _default_policy(self, mc: MapperContext, name: str, region: str) -> dict:
        """IaSQL's default queue policy: ``SQS:*`` for the caller's identity only."""
        me = await mc.call("sts", mc.default_region, "get_caller_identity")
        return {"Version": "2008-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": [me["Arn"]]}, "Action": ["SQS:*"],
            "Resource": [f"arn:aws:sqs:{region}:{me['Account']}:{name}"]}]}

    @staticmethod
    def _attributes(row: dict, policy: Any) -> dict:
        attrs = {attr: str(row[col]) for col, attr in INT_ATTRS if row.get(col) is not None}
        if policy is not None:
            attrs["Policy"] = json.dumps(json_or_text(policy))
        return attrs

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the queue (IaSQL's default policy when the row has none); returns its record.
        A failed read afterwards deletes it again (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        policy = row.get("policy") or await self._default_policy(mc, row["name"], region)
        attrs = self._attributes(row, policy)
        if row.get("fifo_queue"):
            attrs["FifoQueue"] = "true"
        url = (await mc.call("sqs", region, "create_queue", QueueName=row["name"], Attributes=attrs))["QueueUrl"]
        return await read_back_or_remove(self._record(mc, region, url),
                                         lambda: mc.call("sqs", region, "delete_queue", QueueUrl=url),
                                         {"url": url, "region": region, "name": row["name"]})

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set the integer attributes and the policy in place; returns the new record. Raises
        engine.aws.CloudError."""
        attrs = self._attributes(row, row.get("policy"))
        if attrs:
            await mc.call("sqs", cloud["region"], "set_queue_attributes", QueueUrl=cloud["url"], Attributes=attrs)
        return await self._record(mc, cloud["region"], cloud["url"])

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the queue. Raises engine.aws.CloudError."""
        await mc.call("sqs", cloud["region"], "delete_queue", QueueUrl=cloud["url"])


MODULE = Module(
    name="aws_sqs",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.queue (
             id serial PRIMARY KEY,
             url character varying,
             name character varying NOT NULL,
             fifo_queue boolean NOT NULL DEFAULT false,
             visibility_timeout integer NOT NULL DEFAULT 30,
             delay_seconds integer NOT NULL DEFAULT 0,
             receive_message_wait_time_seconds integer NOT NULL DEFAULT 0,
             message_retention_period integer NOT NULL DEFAULT 345600,
             maximum_message_size integer NOT NULL DEFAULT 262144,
             policy json,
             arn character varying,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             CONSTRAINT uq_queue_arn UNIQUE (arn))""",
        """CREATE FUNCTION public.before_queue_insert_update() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
           BEGIN
             -- a FIFO queue's name ends in .fifo, and only a FIFO queue's does (IaSQL's after_install.sql)
             IF (NEW.name NOT LIKE '%.fifo') AND (NEW.fifo_queue) THEN
               RAISE EXCEPTION 'The name of a fifo queue should end with .fifo';
             END IF;
             IF (NEW.name LIKE '%.fifo') AND (NOT NEW.fifo_queue) THEN
               RAISE EXCEPTION 'Non-fifo queue name should not end with .fifo';
             END IF;
             RETURN NEW;
           END; $$""",
        """CREATE TRIGGER before_queue_insert_update BEFORE INSERT OR UPDATE ON public.queue
           FOR EACH ROW EXECUTE FUNCTION public.before_queue_insert_update()""",
    ),
    uninstall_sql=("DROP TABLE public.queue", "DROP FUNCTION public.before_queue_insert_update()"),
    mappers=(QueueMapper(),),
    description="SQS queues",
)
