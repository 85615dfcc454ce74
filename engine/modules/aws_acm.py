"""Module ``aws_acm``: ACM certificates.

Table ``certificate`` as in IaSQL v0.1.x's ``aws_acm`` module (``migration/1678792982808-aws_acm.ts``):
``id`` SERIAL, ``arn`` (unique), ``certificate_id``, ``domain_name``, ``certificate_type``
(``certificate_certificate_type_enum``: AMAZON_ISSUED, IMPORTED), ``status``
(``certificate_status_enum``), ``renewal_eligibility`` (``certificate_renewal_eligibility_enum``),
``in_use`` (false), ``region`` and ``tags`` json (``{"key": "value"}``).

Follows IaSQL's ``mappers/certificate.ts``: the cloud id is the ARN; ``tags`` change in place
(remove the old, add the new); every other column is the cloud's (``arn``, ``certificate_id``,
``certificate_type``, ``status``, ``renewal_eligibility``, ``in_use``). Where IaSQL refuses an
inserted row (it deletes it again and offers its RPCs instead), this module requests an
Amazon-issued certificate for the row's ``domain_name`` with DNS validation
(``request_certificate``). A new ``domain_name`` or ``region`` requests a new certificate and
deletes the old one (replace).

RPCs (below), as IaSQL's ``rpcs/request.ts`` and ``rpcs/import.ts``:
``certificate_request(domain_name, validation_method, region, options, tags)`` and
``certificate_import(certificate, private_key, region, options, tags)``; each records the new
certificate's row. The private key goes to ACM only: never a table, the audit log, a message or a log.

moto (5.2, the tests' cloud) answers all the calls used here. Its requested certificates stay
``PENDING_VALIDATION`` for ``MOTO_ACM_VALIDATION_WAIT`` seconds (60 by default) whatever DNS
records exist, then become ``ISSUED``; it ignores ``DomainValidationOptions``; a certificate
requested with a private CA (``options`` ``{"arn": ...}``) is ``ISSUED`` at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, require_table_privileges, rpc_region

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


#: certificate_request with DNS validation: how long it waits for ACM to show the validation
#: records and then for the certificate to be issued (IaSQL: 30 tries 2 s apart, then its waiter's
#: 300 s), and the pause between two looks.
RECORDS_WAIT, ISSUE_WAIT, POLL_PAUSE = 60.0, 300.0, 2.0
#: ACM error codes that mean the caller's arguments were refused (SQLSTATE 22023).
BAD_ARGUMENT_CODES = ("ValidationException", "InvalidParameterException", "InvalidArnException",
                      "InvalidDomainValidationOptionsException", "InvalidTagException", "TooManyTagsException")


def _json_arg(value: Any, name: str) -> dict:
    """A json argument (``options``, ``tags``) as a dict: NULL is ``{}``. Raises EngineError 22023
    when it is not a JSON object."""
    from engine.rpc import EngineError

    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            raise EngineError("22023", f"{name} must be a JSON object") from None
    if not isinstance(value, dict):
        raise EngineError("22023", f"{name} must be a JSON object")
    return value


def _acm_error(e: CloudError, what: str) -> Exception:
    """The EngineError for a failed ACM call: 22023 when ACM refused the arguments (its message,
    which never repeats a key or a certificate body), else 58000."""
    from engine.rpc import EngineError

    if e.code in BAD_ARGUMENT_CODES:
        return EngineError("22023", f"ACM refused to {what}: {e.aws_message}")
    return EngineError("58000", f"AWS call failed: {e}")


def _check_list_option(opts: dict, key: str, kind: type, what: str) -> None:
    """Refuse option ``key`` of ``certificate_request`` unless it is absent, null or a JSON list
    of ``kind`` (a string would otherwise be sent as its letters). Returns None. Raises
    EngineError 22023 ``options.<key> must be a list of <what>``."""
    from engine.rpc import EngineError

    value = opts.get(key)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise EngineError("22023", f"options.{key} must be a list of {what}",
                          hint='e.g. options \'{"subjectAlternativeNames": ["www.example.com"]}\'')


async def _check_insert(s: Any, function: str) -> None:
    """Raise EngineError 42501 when the caller may not INSERT into ``certificate`` (before any
    cloud call: the row could not be written afterwards)."""
    await require_table_privileges(s, function, "certificate", ("INSERT",), "the certificate")


async def _write_row(s: Any, mc: MapperContext, region: str, arn: str) -> dict:
    """Describe certificate ``arn`` and write its ``certificate`` row; returns the record.

    An upsert on ``arn`` (``uq_certificate_arn``): another session's sync may have read the new
    certificate in (and committed its row) while this call waited for validation; that row is
    then updated with what ACM says now (when the caller may UPDATE ``certificate``; INSERT alone
    is what the call needs) instead of the call failing with 23505. Raises CloudError (the
    certificate cannot be described), SqlError (the row cannot be written)."""
    from psycopg.types.json import Json

    rec = await CertificateMapper()._record(mc, region, arn)
    if rec is None:
        raise CloudError("ResourceNotFoundException", f"certificate {arn} has no domain", "acm.describe_certificate")
    values = (rec["arn"], rec["certificate_id"], rec["domain_name"], rec["certificate_type"], rec["status"],
              rec["renewal_eligibility"], rec["in_use"], region, Json(rec["tags"]) if rec["tags"] else None)
    tag = await s.execute(  # no RETURNING: INSERT needs no SELECT on the table
        "INSERT INTO public.certificate (arn, certificate_id, domain_name, certificate_type, status, "
        "renewal_eligibility, in_use, region, tags) VALUES ($1, $2, $3, "
        "$4::text::public.certificate_certificate_type_enum, $5::text::public.certificate_status_enum, "
        "$6::text::public.certificate_renewal_eligibility_enum, $7, $8, $9) ON CONFLICT (arn) DO NOTHING",
        values)
    if tag == "INSERT 0 0" and (await s.fetchone(
            "SELECT pg_catalog.has_table_privilege('public.certificate', 'UPDATE')"))[0]:
        # the row a sync committed meanwhile gets what ACM says now (without UPDATE on the table
        # it is left as the sync wrote it: the next sync refreshes it)
        await s.execute(
            "UPDATE public.certificate SET certificate_id = $2, domain_name = $3, "
            "certificate_type = $4::text::public.certificate_certificate_type_enum, "
            "status = $5::text::public.certificate_status_enum, "
            "renewal_eligibility = $6::text::public.certificate_renewal_eligibility_enum, in_use = $7, "
            "region = $8, tags = $9 WHERE arn = $1", values)
    return rec


def _zone_for(name: str, zones: list[dict]) -> dict | None:
    """The hosted zone (the most specific one) that ``name`` belongs to, or None."""
    from engine.modules.aws_route53 import domain

    name = domain(name) or ""
    best = None
    for z in zones:
        apex = domain(z["Name"]) or ""
        if (name == apex or name.endswith("." + apex)) and (best is None or len(apex) > len(domain(best["Name"]))):
            best = z
    return best


async def _status(mc: MapperContext, region: str, arn: str) -> dict:
    return (await mc.call("acm", region, "describe_certificate", CertificateArn=arn)).get("Certificate") or {}


async def _validate_by_dns(s: Any, mc: MapperContext, region: str, arn: str) -> str | None:
    """IaSQL's ``validateCertificate``: wait for ACM's validation records, create each as a CNAME
    in the Route 53 hosted zone its domain belongs to, wait until the certificate is ISSUED (at most
    ``ISSUE_WAIT`` s), then delete the records again. Returns the certificate's last status."""
    from engine.modules.aws_route53 import REGION as R53

    deadline, options = time.monotonic() + RECORDS_WAIT, []
    while True:
        cert = await _status(mc, region, arn)
        options = [o for o in cert.get("DomainValidationOptions") or () if o.get("DomainName") and o.get("ResourceRecord")]
        if options or cert.get("Status") == "ISSUED" or time.monotonic() >= deadline:
            break
        await s._sleep(POLL_PAUSE)
        s.check_cancelled()
    if not options:
        return cert.get("Status")
    zones = await mc.paginate("route53", R53, "list_hosted_zones", "HostedZones")
    created: list[tuple[str, dict]] = []
    try:
        for o in options:
            zone = _zone_for(o["DomainName"], zones)
            rr = o["ResourceRecord"]
            if zone is None or any(r["Name"] == rr["Name"] for _, r in created):
                continue
            record = {"Name": rr["Name"], "Type": rr.get("Type") or "CNAME", "TTL": 300,
                      "ResourceRecords": [{"Value": rr["Value"]}]}
            await mc.call("route53", R53, "change_resource_record_sets", HostedZoneId=zone["Id"],
                          ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]})
            created.append((zone["Id"], record))
            s.ctx.progress(f"created validation record {rr['Name']} in hosted zone {domain_of(zone)}")
        status = cert.get("Status")
        if created:
            deadline = time.monotonic() + ISSUE_WAIT
            while status != "ISSUED" and time.monotonic() < deadline:
                await s._sleep(POLL_PAUSE)
                s.check_cancelled()
                status = (await _status(mc, region, arn)).get("Status")
        return status
    finally:
        for zone_id, record in created:  # best effort: the records are needed only until ACM has looked
            try:
                await mc.call("route53", R53, "change_resource_record_sets", HostedZoneId=zone_id,
                              ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": record}]})
            except CloudError:
                pass


def domain_of(zone: dict) -> str:
    """A hosted zone's domain, without the final dot."""
    return str(zone.get("Name") or "").rstrip(".")


async def certificate_request(state: Any, ctx: Any, domain_name: Any, validation_method: Any, region: Any,
                              options: Any = "{}", tags: Any = "{}") -> list[tuple]:
    """IaSQL's ``certificate_request`` RPC (``src/modules/aws_acm/rpcs/request.ts``): request an
    ACM certificate for ``domain_name`` in ``region`` (NULL: the default region), as the caller, in
    the caller's transaction.

    Takes the engine state, the ``CallContext``, ``domain_name``, ``validation_method`` (``DNS``
    or ``EMAIL``) and ``region`` (varchar), ``options`` (json: ``arn`` a private CA,
    ``subjectAlternativeNames``, ``domainValidationOptions``) and ``tags`` (json object). With
    ``DNS`` (which needs ``aws_route53`` installed, as in IaSQL) it creates ACM's validation
    CNAMEs in the matching Route 53 hosted zones (cloud only, deleted afterwards), waits up to
    ``ISSUE_WAIT`` s for ``ISSUED``, and when the certificate is not issued deletes it again and
    writes no row. Otherwise it writes the certificate's ``certificate`` row. Returns one row
    (arn, status, message): ``(arn, 'ISSUED', 'Successfully validated the certificate')``;
    ``(arn, status, 'Certificate could not be validated')``; for EMAIL
    ``(arn, 'PENDING', 'Check your email for next steps to validate the certificate request')``
    (IaSQL returns an empty arn there). Raises EngineError 22004 (domain name NULL or empty),
    22023 (validation method not DNS/EMAIL, options or tags not a JSON object,
    options.subjectAlternativeNames not a list of strings or options.domainValidationOptions not a
    list of objects, region not enabled, ACM refused the arguments), 55000 (DNS without aws_route53), 42501 (the caller may not INSERT
    into ``certificate``: checked before the request), 58000 (any other AWS failure), 57014
    (cancelled: a certificate being validated is deleted), the server's SQLSTATE when the row
    cannot be written.
    """
    from engine.core.functions import installed_modules, mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not domain_name:
        raise EngineError("22004", "certificate_request needs a domain name")
    method = str(validation_method or "").upper()
    if method not in ("DNS", "EMAIL"):
        raise EngineError("22023", "validation_method must be DNS or EMAIL")
    opts, tag_map = _json_arg(options, "options"), _json_arg(tags, "tags")
    _check_list_option(opts, "subjectAlternativeNames", str, "strings (domain names)")
    _check_list_option(opts, "domainValidationOptions", dict, "objects ({\"DomainName\": ..., "
                       "\"ValidationDomain\": ...})")
    async with EngineSession(ctx, state, "certificate_request") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "certificate_request", region, enabled=True)
        if method == "DNS" and "aws_route53" not in {m.name for m in await installed_modules(s)}:
            raise EngineError("55000", 'DNS validated certificates only possible if "aws_route53" is installed',
                              hint="SELECT * FROM iasql_install('aws_route53'); or use EMAIL validation.")
        await _check_insert(s, "certificate_request")
        kw: dict[str, Any] = {"DomainName": domain_name, "ValidationMethod": method}
        if opts.get("arn"):
            kw["CertificateAuthorityArn"] = opts["arn"]
        if opts.get("subjectAlternativeNames"):
            kw["SubjectAlternativeNames"] = opts["subjectAlternativeNames"]
        if opts.get("domainValidationOptions"):
            kw["DomainValidationOptions"] = opts["domainValidationOptions"]
        if tag_map:
            kw["Tags"] = [{"Key": str(k), "Value": str(v)} for k, v in tag_map.items()]
        s.check_cancelled()
        try:
            arn = (await mc.call("acm", region, "request_certificate", **kw)).get("CertificateArn")
        except CloudError as e:
            raise _acm_error(e, "request the certificate") from None
        if not arn:
            return [("", "ERROR", "Error requesting certificate")]
        ctx.progress(f"requested certificate {arn} for {domain_name} in {region}")
        if method == "DNS":
            try:
                status = await _validate_by_dns(s, mc, region, arn)
            except BaseException:
                try:  # never leave a certificate that no row records and nobody validates
                    await mc.call("acm", region, "delete_certificate", CertificateArn=arn)
                except CloudError:
                    pass
                raise
            if status != "ISSUED":
                await mc.call("acm", region, "delete_certificate", CertificateArn=arn)
                ctx.progress(f"deleted certificate {arn}: not validated (status {status})")
                return [(arn, status, "Certificate could not be validated")]
            rec = await _write_row(s, mc, region, arn)
            return [(arn, rec["status"], "Successfully validated the certificate")]
        await _write_row(s, mc, region, arn)
        return [(arn, "PENDING", "Check your email for next steps to validate the certificate request")]


async def certificate_import(state: Any, ctx: Any, certificate: Any, private_key: Any, region: Any,
                             options: Any = "{}", tags: Any = "{}") -> list[tuple]:
    """IaSQL's ``certificate_import`` RPC (``src/modules/aws_acm/rpcs/import.ts``): import the
    PEM ``certificate`` with its PEM ``private_key`` into ACM in ``region`` (NULL: the default
    region), as the caller, in the caller's transaction, and write its ``certificate`` row.

    Takes the engine state, the ``CallContext``, ``certificate``, ``private_key`` and ``region``
    (varchar), ``options`` (json: ``chain``, the PEM certificate chain) and ``tags`` (json
    object). Calls ACM ``import_certificate``. The private key goes to ACM only (never a table,
    the audit log, a message or a log). Returns one row (arn, status, message):
    ``(arn, 'ISSUED', 'Imported the certificate successfully')`` (status as ACM reports it).
    Raises EngineError 22004 (certificate or private key NULL or empty), 22023 (options or tags
    not a JSON object, region not enabled, ACM refused the PEM: not PEM-encoded, key does not
    match, expired), 42501 (the caller may not INSERT into ``certificate``: checked before the
    import), 58000 (any other AWS failure), 57014 (cancelled), the server's SQLSTATE when the row
    cannot be written.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not certificate or not private_key:
        raise EngineError("22004", "certificate_import needs a certificate and its private key")
    opts, tag_map = _json_arg(options, "options"), _json_arg(tags, "tags")
    async with EngineSession(ctx, state, "certificate_import") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "certificate_import", region, enabled=True)
        await _check_insert(s, "certificate_import")
        kw: dict[str, Any] = {"Certificate": str(certificate).encode(), "PrivateKey": str(private_key).encode()}
        if opts.get("chain"):
            kw["CertificateChain"] = str(opts["chain"]).encode()
        if tag_map:
            kw["Tags"] = [{"Key": str(k), "Value": str(v)} for k, v in tag_map.items()]
        s.check_cancelled()
        try:
            arn = (await mc.call("acm", region, "import_certificate", **kw)).get("CertificateArn")
        except CloudError as e:
            raise _acm_error(e, "import the certificate") from None
        if not arn:
            return [("", "ERROR", "Error importing certificate")]
        ctx.progress(f"imported certificate {arn} in {region}")
        rec = await _write_row(s, mc, region, arn)
        return [(arn, rec["status"], "Imported the certificate successfully")]


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    cols = (Column("arn", "varchar"), Column("status", "varchar"), Column("message", "varchar"))
    return (
        Function(
            name="certificate_request",
            arguments=(Argument("domain_name", "varchar"), Argument("validation_method", "varchar"),
                       Argument("region", "varchar"), Argument("options", "json", default="{}"),
                       Argument("tags", "json", default="{}")),
            columns=cols,
            impl=certificate_request,
            description="Requests an ACM certificate for a domain (DNS validation through Route 53, or EMAIL)",
            sample_usage="SELECT * FROM certificate_request('example.com', 'DNS', 'us-east-1', '{}')",
            mutating=True,
        ),
        Function(
            name="certificate_import",
            arguments=(Argument("certificate", "varchar"), Argument("private_key", "varchar"),
                       Argument("region", "varchar"), Argument("options", "json", default="{}"),
                       Argument("tags", "json", default="{}")),
            columns=cols,
            impl=certificate_import,
            description="Imports a PEM certificate and its private key into ACM",
            sample_usage="SELECT * FROM certificate_import('-----BEGIN CERTIFICATE-----...', "
                         "'-----BEGIN PRIVATE KEY-----...', 'us-east-1', '{}')",
            mutating=True,
        ),
    )


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
    rpcs=_rpcs(),
)
