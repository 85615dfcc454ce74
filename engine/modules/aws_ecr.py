"""Module ``aws_ecr``: ECR private repositories, their policies, and ECR Public repositories.

Tables as in IaSQL v0.1.x's ``aws_ecr`` module (``migration/1676651823685-aws_ecr.ts``, mappers
in ``index.ts``):

- ``repository(id, repository_name, repository_arn, registry_id, repository_uri, created_at
  timestamptz, image_tag_mutability repository_image_tag_mutability_enum ('MUTABLE'),
  scan_on_push (false), region)``, unique ``(repository_name, region)`` and ``(id, region)``.
  Cloud id ``(repository_name, region)``; ``image_tag_mutability`` and ``scan_on_push`` change in
  place (``put_image_tag_mutability``, ``put_image_scanning_configuration``), the ARN, registry,
  URI and creation time are cloud-managed. Deleting a repository that still holds images is
  refused by AWS (``RepositoryNotEmptyException``, SQLSTATE 58000), as with IaSQL.
- ``repository_policy(id, registry_id, policy json, region, repository_id)``, the foreign key
  ``(repository_id, region)`` -> ``repository (id, region)`` (ON DELETE NO ACTION: delete the
  policy row with its repository's), unique ``(repository_id, region)``. Cloud id: the repository
  (``repository_id``, ``region``); a new policy is set again in place (``set_repository_policy``),
  ``registry_id`` is cloud-managed. A policy of a repository that has no row is not imported.
- ``public_repository(repository_name PRIMARY KEY, repository_arn, registry_id,
  repository_uri, created_at timestamptz)``: ECR Public (us-east-1 only); nothing changes in place.

- ``repository_image(id, image_id, image_digest, image_tag, registry_id, pushed_at timestamptz,
  size_in_mb, private_repository_region, private_repository_id, public_repository)``: the images
  of the private repositories that have rows, one row per tag, with IaSQL's trigger refusing a
  change of ``private_repository_region`` (SQLSTATE P0001). Images are pushed, never inserted (a
  commit refuses a new row, SQLSTATE 58000); deleting a row deletes that tag in the cloud.

Not built yet: IaSQL's ``ecr_build`` function, and the images of ECR Public repositories. moto (5.2) has no
ECR Public: against a stand-in endpoint (``aws_endpoint_url`` set) that answers ECR Public reads
with an error, ``public_repository`` reads as empty (a create still fails, SQLSTATE 58000); the
tests cover ``repository`` and ``repository_policy``.
"""

from __future__ import annotations

import json
from typing import Any

from engine.aws import CloudError
from engine.modules.aws_account import VERSION
from engine.modules.base import Col, Mapper, MapperContext, Module, normalize

PUBLIC_REGION = "us-east-1"


class RepositoryMapper(Mapper):
    """``repository`` rows <-> ECR private repositories of the enabled regions."""

    table = "repository"
    columns = (Col("id", "int", "pk"), Col("repository_name"), Col("repository_arn", "text", "cloud"),
               Col("registry_id", "text", "cloud"), Col("repository_uri", "text", "cloud"),
               Col("created_at", "timestamptz", "cloud"), Col("image_tag_mutability"), Col("scan_on_push", "bool"),
               Col("region"))
    key = ("repository_name", "region")
    pk = ("id",)

    def describe(self, rec: dict) -> str:
        """``repository <name> in <region>``."""
        return f"repository {rec.get('repository_name')} in {rec.get('region')}"

    @staticmethod
    def _record(r: dict, region: str) -> dict:
        return {"repository_name": r["repositoryName"], "repository_arn": r.get("repositoryArn"),
                "registry_id": r.get("registryId"), "repository_uri": r.get("repositoryUri"),
                "created_at": r.get("createdAt"), "image_tag_mutability": r.get("imageTagMutability") or "MUTABLE",
                "scan_on_push": bool((r.get("imageScanningConfiguration") or {}).get("scanOnPush", False)),
                "region": region}

    async def _get(self, mc: MapperContext, region: str, name: str) -> dict:
        res = await mc.call("ecr", region, "describe_repositories", repositoryNames=[name])
        return self._record(res["repositories"][0], region)

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every private repository of the enabled regions. Raises engine.aws.CloudError."""
        out = []
        for region in mc.regions:
            out += [self._record(r, region) for r in await mc.paginate("ecr", region, "describe_repositories",
                                                                       "repositories")]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the repository; returns its record. A failed read afterwards deletes it again
        (or sets ``left``). Raises engine.aws.CloudError."""
        region = row.get("region") or mc.default_region
        name = row["repository_name"]
        await mc.call("ecr", region, "create_repository", repositoryName=name,
                      imageTagMutability=row.get("image_tag_mutability") or "MUTABLE",
                      imageScanningConfiguration={"scanOnPush": bool(row.get("scan_on_push"))})
        try:
            return await self._get(mc, region, name)
        except CloudError as e:
            try:
                await mc.call("ecr", region, "delete_repository", repositoryName=name)
            except CloudError:
                e.left = {"repository_name": name, "region": region}
            raise

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Tag mutability and scan-on-push in place; returns the new record. Raises engine.aws.CloudError."""
        region, name = cloud["region"], cloud["repository_name"]
        if row.get("image_tag_mutability") != cloud.get("image_tag_mutability"):
            await mc.call("ecr", region, "put_image_tag_mutability", repositoryName=name,
                          imageTagMutability=row["image_tag_mutability"])
        if bool(row.get("scan_on_push")) != bool(cloud.get("scan_on_push")):
            await mc.call("ecr", region, "put_image_scanning_configuration", repositoryName=name,
                          imageScanningConfiguration={"scanOnPush": bool(row.get("scan_on_push"))})
        return await self._get(mc, region, name)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the repository (AWS refuses while it holds images). Raises engine.aws.CloudError."""
        await mc.call("ecr", cloud["region"], "delete_repository", repositoryName=cloud["repository_name"])


class RepositoryPolicyMapper(Mapper):
    """``repository_policy`` rows <-> the policies of the repositories that have rows."""

    table = "repository_policy"
    columns = (Col("id", "int", "pk"), Col("registry_id", "text", "cloud"), Col("policy", "json"), Col("region"),
               Col("repository_id", "int"))
    key = ("repository_id", "region")
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """``policy of repository #<id> in <region>``."""
        return f"policy of repository #{rec.get('repository_id')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """True when the policies are the same JSON (IaSQL's ``policiesAreSame``)."""
        return normalize("json", row.get("policy")) == normalize("json", cloud.get("policy"))

    async def _repository_name(self, mc: MapperContext, repository_id: Any) -> str:
        rows = await mc.fetchall("SELECT repository_name FROM public.repository WHERE id = $1", (repository_id,))
        if not rows:
            raise CloudError("RepositoryNotFoundException", f"repository #{repository_id} has no row", "ecr")
        return rows[0][0]

    async def _get(self, mc: MapperContext, region: str, name: str, repository_id: Any) -> dict | None:
        try:
            res = await mc.call("ecr", region, "get_repository_policy", repositoryName=name)
        except CloudError as e:
            if e.code in ("RepositoryPolicyNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        text = res.get("policyText")
        return {"registry_id": res.get("registryId"), "policy": json.loads(text) if text else None, "region": region,
                "repository_id": repository_id, "_repository_name": name, "_orphan": repository_id is None}

    async def read(self, mc: MapperContext) -> list[dict]:
        """The policy of every repository of the enabled regions, ``repository_id`` resolved
        through the ``repository`` table. Raises engine.aws.CloudError."""
        ids = {(n, r): i for i, n, r in await mc.fetchall("SELECT id, repository_name, region FROM public.repository")}
        out = []
        for region in mc.regions:
            for r in await mc.paginate("ecr", region, "describe_repositories", "repositories"):
                rec = await self._get(mc, region, r["repositoryName"], ids.get((r["repositoryName"], region)))
                if rec is not None:
                    out.append(rec)
        return out

    async def _set(self, mc: MapperContext, region: str, row: dict) -> dict:
        name = await self._repository_name(mc, row["repository_id"])
        policy = row.get("policy")
        await mc.call("ecr", region, "set_repository_policy", repositoryName=name,
                      policyText=policy if isinstance(policy, str) else json.dumps(policy))
        rec = await self._get(mc, region, name, row["repository_id"])
        if rec is None:
            raise CloudError("RepositoryPolicyNotFoundException", f"the policy of {name} vanished after it was set",
                             "ecr.set_repository_policy")
        return rec

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Set the repository's policy; returns its record. Raises engine.aws.CloudError."""
        return await self._set(mc, row.get("region") or mc.default_region, row)

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Set the new policy; returns its record. Raises engine.aws.CloudError."""
        return await self._set(mc, cloud["region"], row)

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the policy (nothing to do when its repository is gone already). Raises
        engine.aws.CloudError."""
        try:
            await mc.call("ecr", cloud["region"], "delete_repository_policy", repositoryName=cloud["_repository_name"])
        except CloudError as e:
            if e.code not in ("RepositoryNotFoundException", "RepositoryPolicyNotFoundException"):
                raise


class RepositoryImageMapper(Mapper):
    """``repository_image`` rows <-> the images (one record per tag) of the private repositories
    that have rows. Images are pushed (``docker push``), never inserted: a commit refuses a new
    row (``ImagesArePushed``, SQLSTATE 58000); a deleted row deletes the image's tag
    (``batch_delete_image``). Follows IaSQL's ``RepositoryImageMapper``: ``image_id`` is
    ``digest|tag|private|repository|region``; every other column is the cloud's."""

    table = "repository_image"
    columns = (Col("id", "int", "pk"), Col("image_id", "text", "cloud"), Col("image_digest", "text", "cloud"),
               Col("image_tag", "text", "cloud"), Col("registry_id", "text", "cloud"),
               Col("pushed_at", "timestamptz", "cloud"), Col("size_in_mb", "int", "cloud"),
               Col("private_repository_region", "text", "cloud"), Col("private_repository_id", "int", "cloud"),
               Col("public_repository", "text", "cloud"))
    key = ("image_id",)
    pk = ("id",)
    cloud_read_uses_db = True

    def describe(self, rec: dict) -> str:
        """``image <repository>:<tag> in <region>``."""
        parts = str(rec.get("image_id") or "").split("|")
        repo = parts[3] if len(parts) > 3 else f"#{rec.get('private_repository_id')}"
        return f"image {repo}:{rec.get('image_tag')} in {rec.get('private_repository_region')}"

    @staticmethod
    def _records(img: dict, region: str, repository_id: Any) -> list[dict]:
        size = img.get("imageSizeInBytes")
        out = []
        for tag in img.get("imageTags") or ["<untagged>"]:
            out.append({"image_id": f"{img['imageDigest']}|{tag}|private|{img['repositoryName']}|{region}",
                        "image_digest": img["imageDigest"], "image_tag": tag, "registry_id": img.get("registryId"),
                        "pushed_at": img.get("imagePushedAt"),
                        "size_in_mb": round(size / 1024 / 1024) if size is not None else None,
                        "private_repository_region": region, "private_repository_id": repository_id,
                        "public_repository": None, "_repository_name": img["repositoryName"],
                        "_orphan": repository_id is None})
        return out

    async def read(self, mc: MapperContext) -> list[dict]:
        """The images of every private repository (of the enabled regions) that has a row. Raises
        engine.aws.CloudError."""
        out = []
        for repository_id, name, region in await mc.fetchall(
                "SELECT id, repository_name, region FROM public.repository WHERE repository_arn IS NOT NULL"):
            if region not in mc.regions:
                continue
            try:
                images = await mc.paginate("ecr", region, "describe_images", "imageDetails", repositoryName=name)
            except CloudError as e:
                if e.code == "RepositoryNotFoundException":
                    continue
                raise
            for img in images:
                if img.get("imageDigest"):
                    out += self._records(img, region, repository_id)
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Images cannot be inserted. Raises engine.aws.CloudError (``ImagesArePushed``)."""
        raise CloudError("ImagesArePushed", "repository images are pushed (docker push), not inserted",
                         "ecr.put_image")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing changes in place: returns the cloud record (the sync writes it back)."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the image's tag (the untagged image by its digest). Raises engine.aws.CloudError."""
        image = {"imageDigest": cloud["image_digest"]}
        if cloud.get("image_tag") and cloud["image_tag"] != "<untagged>":
            image["imageTag"] = cloud["image_tag"]
        res = await mc.call("ecr", cloud["private_repository_region"], "batch_delete_image",
                            repositoryName=cloud["_repository_name"], imageIds=[image])
        failures = [f for f in res.get("failures") or [] if f.get("failureCode") != "ImageNotFound"]
        if failures:
            raise CloudError(failures[0].get("failureCode", "ImageDeleteFailed"),
                             failures[0].get("failureReason", ""), "ecr.batch_delete_image")


class PublicRepositoryMapper(Mapper):
    """``public_repository`` rows <-> ECR Public repositories (us-east-1)."""

    table = "public_repository"
    columns = (Col("repository_name"), Col("repository_arn", "text", "cloud"), Col("registry_id", "text", "cloud"),
               Col("repository_uri", "text", "cloud"), Col("created_at", "timestamptz", "cloud"))
    key = ("repository_name",)
    pk = ("repository_name",)

    def describe(self, rec: dict) -> str:
        """``public repository <name>``."""
        return f"public repository {rec.get('repository_name')}"

    @staticmethod
    def _record(r: dict) -> dict:
        return {"repository_name": r["repositoryName"], "repository_arn": r.get("repositoryArn"),
                "registry_id": r.get("registryId"), "repository_uri": r.get("repositoryUri"),
                "created_at": r.get("createdAt")}

    async def read(self, mc: MapperContext) -> list[dict]:
        """Every ECR Public repository; none from a stand-in endpoint without ECR Public (see the
        module docstring). Raises engine.aws.CloudError."""
        try:
            repos = await mc.paginate("ecr-public", PUBLIC_REGION, "describe_repositories", "repositories")
        except CloudError:
            if getattr(getattr(mc.aws, "settings", None), "aws_endpoint_url", None):
                return []
            raise
        return [self._record(r) for r in repos]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the public repository; returns its record. Raises engine.aws.CloudError."""
        res = await mc.call("ecr-public", PUBLIC_REGION, "create_repository", repositoryName=row["repository_name"])
        return self._record(res["repository"])

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Nothing changes in place: returns the cloud record (the sync writes it back)."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the public repository. Raises engine.aws.CloudError."""
        await mc.call("ecr-public", PUBLIC_REGION, "delete_repository", repositoryName=cloud["repository_name"])


MODULE = Module(
    name="aws_ecr",
    version=VERSION,
    dependencies=("aws_account",),
    install_sql=(
        """CREATE TABLE public.public_repository (
             repository_name character varying PRIMARY KEY,
             repository_arn character varying,
             registry_id character varying,
             repository_uri character varying,
             created_at timestamp with time zone)""",
        "CREATE TYPE public.repository_image_tag_mutability_enum AS ENUM ('IMMUTABLE', 'MUTABLE')",
        """CREATE TABLE public.repository (
             id serial PRIMARY KEY,
             repository_name character varying NOT NULL,
             repository_arn character varying,
             registry_id character varying,
             repository_uri character varying,
             created_at timestamp with time zone,
             image_tag_mutability public.repository_image_tag_mutability_enum NOT NULL DEFAULT 'MUTABLE',
             scan_on_push boolean NOT NULL DEFAULT false,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             CONSTRAINT uq_repository_name_region UNIQUE (repository_name, region),
             CONSTRAINT uq_repository_id_region UNIQUE (id, region))""",
        """CREATE TABLE public.repository_policy (
             id serial PRIMARY KEY,
             registry_id character varying,
             policy json,
             region character varying NOT NULL DEFAULT public.default_aws_region() REFERENCES public.aws_regions (region),
             repository_id integer NOT NULL,
             CONSTRAINT uq_repository_policy_region UNIQUE (id, region),
             CONSTRAINT uq_repository_policy_repository_region UNIQUE (repository_id, region),
             CONSTRAINT fk_repository_policy_repository FOREIGN KEY (repository_id, region)
               REFERENCES public.repository (id, region))""",
        """CREATE TABLE public.repository_image (
             id serial PRIMARY KEY,
             image_id character varying NOT NULL,
             image_digest character varying NOT NULL,
             image_tag character varying NOT NULL,
             registry_id character varying,
             pushed_at timestamp with time zone,
             size_in_mb integer,
             private_repository_region character varying REFERENCES public.aws_regions (region),
             private_repository_id integer,
             public_repository character varying REFERENCES public.public_repository (repository_name),
             CONSTRAINT uq_repository_image_id_region UNIQUE (image_id, private_repository_region),
             CONSTRAINT uq_repository_image_region UNIQUE (id, private_repository_region),
             CONSTRAINT fk_repository_image_repository FOREIGN KEY (private_repository_id, private_repository_region)
               REFERENCES public.repository (id, region))""",
        """CREATE FUNCTION public.block_private_repository_region_update() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
           BEGIN
             RAISE EXCEPTION 'Region cannot be modified'
               USING DETAIL = 'A repository image cannot be moved to another region',
                     HINT = 'If you want to move a repository to another region, you can create a new one with '
                            'the same name in that region or you can delete all images and then move it.';
             RETURN OLD;
           END; $$""",
        """CREATE TRIGGER block_private_repository_region_update BEFORE UPDATE ON public.repository_image
           FOR EACH ROW WHEN (OLD.private_repository_region IS DISTINCT FROM NEW.private_repository_region)
           EXECUTE FUNCTION public.block_private_repository_region_update()""",
    ),
    uninstall_sql=("DROP TABLE public.repository_image", "DROP FUNCTION public.block_private_repository_region_update()",
                   "DROP TABLE public.repository_policy", "DROP TABLE public.repository",
                   "DROP TYPE public.repository_image_tag_mutability_enum", "DROP TABLE public.public_repository"),
    mappers=(RepositoryMapper(), RepositoryPolicyMapper(), PublicRepositoryMapper(), RepositoryImageMapper()),
    description="ECR repositories, repository policies, images and ECR Public repositories",
)
