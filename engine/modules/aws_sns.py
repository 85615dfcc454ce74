"""Module ``aws_sns``: SNS topics and subscriptions.

Table ``topic`` as in IaSQL v0.1.x's ``aws_sns`` module (``migration/1678087513859-aws_sns.ts``):
``id`` SERIAL, ``name``, the topic attributes as text (``delivery_policy``, ``display_name``,
``policy``, ``tracing_config``, ``kms_master_key_id``, ``signature_version``,
``content_based_deduplication``), ``fifo_topic`` (false), ``data_protection_policy`` json,
``arn`` (cloud-managed, unique) and ``region``; unique ``(name, region)``.

Follows IaSQL's ``mappers/topic.ts``: the cloud id is the ARN; every change is an update
(``set_topic_attributes`` per attribute, ``put_data_protection_policy``). An attribute left NULL
takes the cloud's value (AWS's default policy, say), written back by the sync; what cannot change
in place (``name``, ``fifo_topic``, ``region``) is put back from the cloud, as IaSQL does.

Table ``subscription(id, endpoint, region, protocol, arn, topic)`` as in IaSQL: ``topic`` holds
the topic's ARN (foreign key to ``topic.arn``, ON DELETE CASCADE). IaSQL makes subscriptions only
through its ``subscribe``/``unsubscribe``/``confirm_subscription`` functions (an inserted row is
deleted again); here an inserted row subscribes (``sns.subscribe``) and a deleted one
unsubscribes, since IaSQL's ``subscribe`` and ``unsubscribe`` are not built (their names have no
``_``, which the proxy's fast-path scan needs to find a module RPC in a statement). The cloud id is
``(topic, protocol, endpoint, region)`` (AWS makes no duplicates; a subscription pending
confirmation has no ARN yet): nothing changes in place, a changed row is a new subscription.
Subscriptions of topics that have no row are not imported.

RPC: ``confirm_subscription(arn, token, region)`` (below). moto (5.2) checks only that the topic
exists: it accepts any token and answers a made-up subscription ARN without changing any
subscription (a pending one stays pending). moto (5.2) also answers ``get_data_protection_policy`` with an
internal error and ignores ``TracingConfig``: against such an endpoint ``data_protection_policy``
reads as NULL (the first failed call of a read is remembered, so it is not asked again).
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
    read_back_or_remove,
    rpc_region,
)

#: (column, SNS attribute name) of the text attributes, IaSQL's ``attributeKeys``.
ATTRS = (("content_based_deduplication", "ContentBasedDeduplication"), ("delivery_policy", "DeliveryPolicy"),
         ("display_name", "DisplayName"), ("kms_master_key_id", "KmsMasterKeyId"), ("policy", "Policy"),
         ("signature_version", "SignatureVersion"), ("tracing_config", "TracingConfig"))
#: CloudError codes of an endpoint that does not implement an operation (moto's internal errors).
UNSUPPORTED = ("ResponseParserError", "InternalFailure", "InternalError", "NotImplemented", "InvalidAction")


def same_text(a: Any, b: Any) -> bool:
    """True when two attribute texts are equal, JSON texts compared as JSON ('' == NULL)."""
    a, b = a or None, b or None
    if a == b:
        return True
    try:
        return json.loads(a) == json.loads(b)
    except (TypeError, ValueError):
        return False


class TopicMapper(Mapper):
    """``topic`` rows <-> SNS topics of the enabled regions (list_topics, get_topic_attributes)."""

    table = "topic"
    columns = (Col("id", "int", "pk"), Col("name"), *(Col(c) for c, _ in ATTRS), Col("fifo_topic", "bool"),
               Col("data_protection_policy", "json"), Col("arn", "text", "cloud"), Col("region"))
    key = ("arn",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``topic <name> in <region>``."""
        return f"topic {rec.get('name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when every attribute the row sets matches the cloud (IaSQL's ``equals``; NULL
        takes the cloud's value)."""
        if any(row.get(c) is not None and not same_text(row.get(c), cloud.get(c)) for c, _ in ATTRS):
            return False
        dp = row.get("data_protection_policy")
        return dp is None or same_text(json.dumps(json_or_text(dp)), json.dumps(json_or_text(cloud.get("data_protection_policy"))))

    def synced_equals(self, row: dict, cloud: dict) -> bool:
        """True when writing the cloud record back would change nothing."""
        return (all(same_text(row.get(c), cloud.get(c)) for c, _ in ATTRS)
                and json_or_text(row.get("data_protection_policy")) == json_or_text(cloud.get("data_protection_policy"))
                and all(row.get(c) == cloud.get(c) for c in ("name", "fifo_topic", "arn", "region")))

    async def _data_protection(self, mc: MapperContext, region: str, arn: str) -> Any:
        if mc.memo.get("sns_no_data_protection"):
            return None
        try:
            res = await mc.call("sns", region, "get_data_protection_policy", ResourceArn=arn)
        except CloudError as e:
            if e.code in UNSUPPORTED:
                mc.memo["sns_no_data_protection"] = True
                return None
            raise
        return json_or_text(res.get("DataProtectionPolicy") or None)

    async def _record(self, mc: MapperContext, region: str, arn: str) -> dict:
        a = (await mc.call("sns", region, "get_topic_attributes", TopicArn=arn)).get("Attributes") or {}
        rec: dict[str, Any] = {c: a.get(attr) or None for c, attr in ATTRS}
        rec.update(name=arn.rsplit(":", 1)[-1], fifo_topic=a.get("FifoTopic") == "true", arn=arn, region=region,
                   data_protection_policy=None)
        if not rec["fifo_topic"]:
            rec["data_protection_policy"] = await self._data_protection(mc, region, arn)
        return rec

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every topic of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            for t in await mc.paginate("sns", region, "list_topics", "Topics"):
                try:
                    out.append(await self._record(mc, region, t["TopicArn"]))
                except CloudError as e:
                    if e.code != "NotFound":  # deleted between the list and the read
                        raise
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the topic with the attributes the row sets; returns its record. A failed read
        afterwards deletes it again (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        attrs = {attr: str(row[c]) for c, attr in ATTRS if row.get(c) is not None}
        kw: dict[str, Any] = {}
        if row.get("fifo_topic"):
            attrs["FifoTopic"] = "true"
        elif row.get("data_protection_policy") is not None:
            kw["DataProtectionPolicy"] = json.dumps(json_or_text(row["data_protection_policy"]))
        arn = (await mc.call("sns", region, "create_topic", Name=row["name"], Attributes=attrs, **kw))["TopicArn"]
        return await read_back_or_remove(self._record(mc, region, arn),
                                         lambda: mc.call("sns", region, "delete_topic", TopicArn=arn),
                                         {"arn": arn, "region": region, "name": row["name"]})

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set each attribute the row sets and the cloud differs in, and the data protection
        policy (not for a FIFO topic); returns the new record. Raises engine.aws.CloudError."""
        region, arn = cloud["region"], cloud["arn"]
        for c, attr in ATTRS:
            if row.get(c) is not None and not same_text(row.get(c), cloud.get(c)):
                await mc.call("sns", region, "set_topic_attributes", TopicArn=arn, AttributeName=attr,
                              AttributeValue=str(row[c]))
        dp = row.get("data_protection_policy")
        if dp is not None and not cloud.get("fifo_topic") and json_or_text(dp) != json_or_text(cloud.get("data_protection_policy")):
            await mc.call("sns", region, "put_data_protection_policy", ResourceArn=arn,
                          DataProtectionPolicy=json.dumps(json_or_text(dp)))
        return await self._record(mc, region, arn)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the topic. Raises engine.aws.CloudError."""
        await mc.call("sns", cloud["region"], "delete_topic", TopicArn=cloud["arn"])


class SubscriptionMapper(Mapper):
    """``subscription`` rows <-> SNS subscriptions of the topics that have rows."""

    table = "subscription"
    columns = (Col("id", "int", "pk"), Col("endpoint"), Col("region"), Col("protocol"),
               Col("arn", "text", "cloud"), Col("topic"))
    key = ("topic", "protocol", "endpoint", "region")
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """``<protocol> subscription of <topic name> to <endpoint>``."""
        topic = str(rec.get("topic") or "").rsplit(":", 1)[-1]
        return f"{rec.get('protocol')} subscription of {topic} to {rec.get('endpoint')}"

    @staticmethod
    def _record(sub: dict, region: str, topics: set) -> dict:
        arn = sub.get("SubscriptionArn")
        return {"endpoint": sub.get("Endpoint"), "region": region, "protocol": sub.get("Protocol"),
                "arn": arn if arn and arn.startswith("arn:") else None, "topic": sub.get("TopicArn"),
                "_orphan": sub.get("TopicArn") not in topics}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every subscription of the enabled regions (``_orphan`` when its topic has no row).
        Raises engine.aws.CloudError."""
        topics = {r[0] for r in await mc.fetchall("SELECT arn FROM public.topic WHERE arn IS NOT NULL")}
        out = []
        for region in mc.regions:
            out += [self._record(sub, region, topics)
                    for sub in await mc.paginate("sns", region, "list_subscriptions", "Subscriptions")
                    if sub.get("Protocol") and sub.get("TopicArn")]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Subscribe ``endpoint`` to the topic; returns the record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        res = await mc.call("sns", region, "subscribe", TopicArn=row["topic"], Protocol=row["protocol"],
                            Endpoint=row["endpoint"], ReturnSubscriptionArn=True)
        return self._record({"SubscriptionArn": res.get("SubscriptionArn"), "Endpoint": row["endpoint"],
                             "Protocol": row["protocol"], "TopicArn": row["topic"]}, region, {row["topic"]})

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing changes in place: returns the cloud record (the sync writes it back)."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Unsubscribe (nothing to do while it is pending confirmation, or when its topic is gone).
        Raises engine.aws.CloudError."""
        if not cloud.get("arn"):
            return
        try:
            await mc.call("sns", cloud["region"], "unsubscribe", SubscriptionArn=cloud["arn"])
        except CloudError as e:
            if e.code != "NotFound":
                raise




async def confirm_subscription(state: Any, ctx: Any, *args: Any) -> list[tuple]:
    """IaSQL's ``confirm_subscription`` RPC (``src/modules/aws_sns/rpcs/confirm_subscription.ts``):
    confirm a subscription to SNS topic ``arn`` with the ``token`` that SNS sent to the endpoint
    when it subscribed, as the caller.

    Takes the engine state, the ``CallContext`` and IaSQL's ``VARIADIC _args text[]`` (default
    empty; its names cannot be named arguments, since Postgres refuses an argument named like the
    result column ``arn``): the topic ARN, the token and optionally the region (missing or NULL
    means ``default_aws_region()``, as in IaSQL). Calls
    SNS ``confirm_subscription`` and returns one row (arn, status, error): the confirmed
    subscription's ARN, ``OK`` and ``''``; or IaSQL's ``''``, ``KO``, ``Error confirming
    subscription`` when SNS answers without an ARN. Writes no row (as IaSQL: the subscription's
    ``arn`` is read into ``subscription`` by the next sync). Unlike IaSQL, which answers a failed
    call with a ``KO`` row, failures are errors: EngineError 22023 (IaSQL's ``Please provide a valid
    SNS subscription ARN and a valid token.`` when one is NULL or empty; also SNS's
    ``InvalidParameter``, e.g. a bad or expired token, with its message), 22023 (more than three
    arguments, which IaSQL ignores; or ``region`` is not a region of ``aws_regions``), 42704 (no such topic), 58000 (any other AWS failure), 57014
    (cancelled). Against moto (5.2), any token of an existing topic is accepted (see the module
    docstring), so a wrong token is not refused there.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if len(args) > 3:
        raise EngineError("22023", f"confirm_subscription takes at most 3 arguments (topic ARN, token, region), "
                                   f"not {len(args)}")
    arn, token, region = (*args, None, None, None)[:3]
    if not arn or not token:
        raise EngineError("22023", "Please provide a valid SNS subscription ARN and a valid token.")
    async with EngineSession(ctx, state, "confirm_subscription") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "confirm_subscription", region)
        s.check_cancelled()
        try:
            res = await mc.call("sns", region, "confirm_subscription", TopicArn=arn, Token=token)
        except CloudError as e:
            if e.code in ("NotFound", "NotFoundException"):
                raise EngineError("42704", f"SNS topic {arn} does not exist in {region}", detail=str(e)) from None
            if e.code in ("InvalidParameter", "InvalidParameterException"):
                raise EngineError("22023", f"SNS refused the confirmation: {e.aws_message}", detail=str(e)) from None
            raise
        sub = res.get("SubscriptionArn")
        if not sub:
            return [("", "KO", "Error confirming subscription")]
        ctx.progress(f"confirmed subscription {sub}")
        return [(sub, "OK", "")]


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    return (
        Function(
            name="confirm_subscription",
            arguments=(Argument("_args", "text", default=[], variadic=True),),
            columns=(Column("arn", "varchar"), Column("status", "varchar"), Column("error", "varchar")),
            impl=confirm_subscription,
            description="Confirms a subscription to an SNS topic with the token sent to its endpoint",
            sample_usage="SELECT * FROM confirm_subscription('<topic arn>', '<token>')",
            mutating=True,
        ),
    )


MODULE = Module(
    name="aws_sns",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.topic (
             id serial PRIMARY KEY,
             name character varying NOT NULL,
             delivery_policy character varying,
             display_name character varying,
             policy character varying,
             tracing_config character varying,
             kms_master_key_id character varying,
             signature_version character varying,
             content_based_deduplication character varying,
             fifo_topic boolean NOT NULL DEFAULT false,
             data_protection_policy json,
             arn character varying,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             CONSTRAINT uq_topic_arn UNIQUE (arn),
             CONSTRAINT uq_topic_name_region UNIQUE (name, region))""",
        """CREATE TABLE public.subscription (
             id serial PRIMARY KEY,
             endpoint character varying NOT NULL,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             protocol character varying NOT NULL,
             arn character varying,
             topic character varying REFERENCES public.topic (arn) ON DELETE CASCADE)""",
    ),
    uninstall_sql=("DROP TABLE public.subscription", "DROP TABLE public.topic"),
    mappers=(TopicMapper(), SubscriptionMapper()),
    description="SNS topics and subscriptions",
    rpcs=_rpcs(),
)
