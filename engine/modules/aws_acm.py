"""Module ``aws_acm``: ACM certificates.

Table ``certificate`` as in IaSQL v0.1.x's ``aws_acm`` module (``migration/1678792982808-aws_acm.ts``):
``id`` SERIAL, ``arn`` (unique), ``certificate_id``, ``domain_name``, ``certificate_type``
(``certificate_certificate_type_enum``: AMAZON_ISSUED, IMPORTED), ``status``
(``certificate_status_enum``), ``renewal_eligibility`` (``certificate_renewal_eligibility_enum``),
``in_use`` (false), ``region`` and ``tags`` json (``{"key": "value"}``).

Follows IaSQL's ``mappers/certificate.ts``: the cloud id is the ARN; ``tags`` change in place
(remove the old, add the new); every other column is the cloud's (``arn``, ``certificate_id``,
``certificate_type``, ``status``, ``renewal_eligibility``, ``in_use``). Where IaSQL refuses an
inserted row (it deletes it again and offers its ``certificate_request``/``certificate_import``
functions instead), this module requests an Amazon-issued certificate for the row's
``domain_name`` with DNS validation (``request_certificate``): there is no engine function yet for
IaSQL's ``certificate_request``/``certificate_import`` (a certificate made elsewhere, imported
ones included, comes in with ``iasql_rollback``). A new ``domain_name`` or ``region`` requests a
new certificate and deletes the old one (replace). moto (5.2) answers all the calls used here.
"""

from __future__ import annotations

import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module

STATUSES = ("EXPIRED", "FAILED", "INACTIVE", "ISSUED", "PENDING_VALIDATION", "REVOKED", "VALIDATION_TIMED_OUT")
#: Key algorithms to list (ListCertificates returns only RSA_2048 ones unless asked), as IaSQL asks.
KEY_TYPES = ["RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1"]


def _tags(value: Any) -> dict:
    """Tags as a dict ({} for NULL)."""
    if isinstance(value, str):
        value = json.loads(value)
    return {str(k): str(v) for k, v in (value or {}).items()}


class CertificateMapper(Mapper):
    """``certificate`` rows <-> ACM certificates of the enabled regions."""

    table = "certificate"
    columns = (Col("id", "int", "pk"), Col("arn", "text", "cloud"), Col("certificate_id", "text", "cloud"),
               Col("domain_name"), Col("certificate_type", "text", "cloud"), Col("status", "text", "cloud"),
               Col("renewal_eligibility", "text", "cloud"), Col("in_use", "bool", "cloud"), Col("region"),
               Col("tags", "json"))
    key = ("arn",)
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``certificate for <domain> in <region>``."""
        return f"certificate for {rec.get('domain_name')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when domain, region and tags match (IaSQL's ``equals``, cloud columns aside)."""
        return (row.get("domain_name") == cloud.get("domain_name") and row.get("region") == cloud.get("region")
                and _tags(row.get("tags")) == _tags(cloud.get("tags")))

    def synced_equals(self, row: dict, cloud: dict) -> bool:
        """True when writing the cloud record back would change nothing ({} tags == NULL)."""
        return self.equals(row, cloud) and all(row.get(c.name) == cloud.get(c.name) for c in self.columns
                                               if c.role == "cloud")

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """A new domain or region needs a new certificate."""
        return row.get("domain_name") != cloud.get("domain_name") or row.get("region") != cloud.get("region")

    async def _record(self, mc: MapperContext, region: str, arn: str) -> dict | None:
        c = (await mc.call("acm", region, "describe_certificate", CertificateArn=arn)).get("Certificate") or {}
        if not c.get("DomainName"):
            return None
        tags = (await mc.call("acm", region, "list_tags_for_certificate", CertificateArn=arn)).get("Tags") or []
        return {"arn": arn, "certificate_id": arn.rsplit("/", 1)[-1], "domain_name": c["DomainName"],
                "certificate_type": c.get("Type") if c.get("Type") in ("AMAZON_ISSUED", "IMPORTED") else None,
                "status": c.get("Status") if c.get("Status") in STATUSES else None,
                "renewal_eligibility": c.get("RenewalEligibility")
                if c.get("RenewalEligibility") in ("ELIGIBLE", "INELIGIBLE") else None,
                "in_use": bool(c.get("InUseBy")), "region": region,
                "tags": {t["Key"]: t.get("Value") for t in tags if t.get("Key") and t.get("Value")} or None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every certificate of the enabled regions, of every key type. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            for s in await mc.paginate("acm", region, "list_certificates", "CertificateSummaryList",
                                       Includes={"keyTypes": KEY_TYPES}):
                try:
                    rec = await self._record(mc, region, s["CertificateArn"])
                except CloudError as e:
                    if e.code == "ResourceNotFoundException":
                        continue
                    raise
                if rec is not None:
                    out.append(rec)
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Request an Amazon-issued certificate for ``domain_name`` (DNS validation) with the row's
        tags; returns its record. Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        kw: dict[str, Any] = {}
        if _tags(row.get("tags")):
            kw["Tags"] = [{"Key": k, "Value": v} for k, v in _tags(row.get("tags")).items()]
        arn = (await mc.call("acm", region, "request_certificate", DomainName=row["domain_name"],
                             ValidationMethod="DNS", **kw))["CertificateArn"]
        try:
            rec = await self._record(mc, region, arn)
        except CloudError as e:
            try:
                await mc.call("acm", region, "delete_certificate", CertificateArn=arn)
            except CloudError:
                e.left = {"arn": arn, "region": region, "domain_name": row["domain_name"]}
            raise
        if rec is None:
            err = CloudError("ResourceNotFoundException", f"certificate {arn} has no domain", "acm.request_certificate")
            err.left = {"arn": arn, "region": region}
            raise err
        return rec

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Replace the tags (remove the old ones, add the new); returns the new record. Raises
        engine.aws.CloudError."""
        region, arn = cloud["region"], cloud["arn"]
        old, new = _tags(cloud.get("tags")), _tags(row.get("tags"))
        if old != new:
            if old:
                await mc.call("acm", region, "remove_tags_from_certificate", CertificateArn=arn,
                              Tags=[{"Key": k, "Value": v} for k, v in old.items()])
            if new:
                await mc.call("acm", region, "add_tags_to_certificate", CertificateArn=arn,
                              Tags=[{"Key": k, "Value": v} for k, v in new.items()])
        return await self._record(mc, region, arn) or cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the certificate (AWS refuses while it is in use). Raises engine.aws.CloudError."""
        await mc.call("acm", cloud["region"], "delete_certificate", CertificateArn=cloud["arn"])


MODULE = Module(
    name="aws_acm",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        "CREATE TYPE public.certificate_certificate_type_enum AS ENUM ('AMAZON_ISSUED', 'IMPORTED')",
        "CREATE TYPE public.certificate_status_enum AS ENUM (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
        "CREATE TYPE public.certificate_renewal_eligibility_enum AS ENUM ('ELIGIBLE', 'INELIGIBLE')",
        """CREATE TABLE public.certificate (
             id serial PRIMARY KEY,
             arn character varying,
             certificate_id character varying,
             domain_name character varying NOT NULL,
             certificate_type public.certificate_certificate_type_enum,
             status public.certificate_status_enum,
             renewal_eligibility public.certificate_renewal_eligibility_enum,
             in_use boolean NOT NULL DEFAULT false,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             tags json,
             CONSTRAINT uq_certificate_arn UNIQUE (arn))""",
    ),
    uninstall_sql=("DROP TABLE public.certificate", "DROP TYPE public.certificate_renewal_eligibility_enum",
                   "DROP TYPE public.certificate_status_enum", "DROP TYPE public.certificate_certificate_type_enum"),
    mappers=(CertificateMapper(),),
    description="ACM certificates (requested with DNS validation; tags in place)",
)
