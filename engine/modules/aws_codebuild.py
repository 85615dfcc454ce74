"""Module ``aws_codebuild``: CodeBuild projects, and the builds and source credentials AWS has.

Tables, columns, types, enums, keys, defaults and constraints follow IaSQL v0.1's
``aws_codebuild`` migration (``src/modules/aws_codebuild/migration/1671142970919-aws_codebuild.ts``)
and its ``sql/after_install.sql`` (the SQL function ``generate_put_ecr_image_build_spec``);
what each mapper reads, compares and replaces follows ``src/modules/aws_codebuild/mappers/*.ts``.
Depends on ``aws_account`` and ``aws_iam`` (``service_role_name`` references ``iam_role``), as in
IaSQL. Tables, in dependency order:

- ``codebuild_project``: identity ``(project_name, region)``, ``arn`` from AWS. Any change
  replaces the project (delete, then create: IaSQL's ``updateOrReplace``). Created with
  ``NO_ARTIFACTS`` artifacts (``CODEPIPELINE`` for a ``CODEPIPELINE`` source), the row's
  environment (type, image, compute type, privileged mode, ``environment_variables``: IaSQL's
  ``simple-json`` text, a JSON list of ``{"name", "value", "type"}``) and the service role's ARN
  from ``iam_role``. ``environment_variables`` is compared as JSON (IaSQL does not compare it);
  an empty ``source_location`` equals NULL.
- ``source_credentials_list(arn, source_type, auth_type, region)``: the source credentials AWS has
  (read-only, as IaSQL: a row cannot be inserted, since credentials are imported with IaSQL's
  ``import_source_credential`` RPC, not built here; an inserted row fails the commit; a changed row is put back by
  the sync; deleting a row deletes the credential with ``delete_source_credentials``).
  Credentials of a server type the ``source_type`` enum cannot hold (``BITBUCKET``,
  ``GITHUB_ENTERPRISE``) are not read.
- ``codebuild_build_list``: the builds AWS has, identity ``(aws_id, region)``; read-only as in
  IaSQL (an inserted row fails the commit; a changed row is put back by the sync); deleting a row
  stops the build when it is ``IN_PROGRESS`` and deletes it (``batch_delete_builds``). A build of a
  project without a row is not inserted (``project_name`` references ``codebuild_project``), and
  the builds AWS keeps of a deleted project are not read (so a project deleted outside leaves the
  table with its builds at the next sync).

RPC: ``start_build(project_name, region)`` (below): starts a build of a project, waits until it
has ended and records it in ``codebuild_build_list``. Not built: IaSQL's
``import_source_credential(region, token, server_type, auth_type)``: moto (the tests' cloud)
does not implement ``import_source_credentials`` (``moto/codebuild/responses.py`` has no such
operation), so it could not be tested; import credentials with the console or
``aws codebuild import-source-credentials`` (the table is read-only either way).

Cloud failures raise ``engine.aws.CloudError``, which a commit reports with SQLSTATE 58000
(after taking back its cloud changes).

moto (5.2.5, the tests' cloud) answers create_project, list_projects, batch_get_projects,
delete_project, start_build (the ``start_build`` RPC; the tests also make builds outside the engine), list_builds,
batch_get_builds and stop_build. It differs from AWS: ``create_project`` requires a source
``location`` for every source type (AWS does not for ``NO_SOURCE``/``CODEPIPELINE``), it has no
``update_project`` (so a project changed outside cannot be made in moto; the tests cover a
project deleted outside), and it
does not implement ``list_source_credentials``, ``import_source_credentials``,
``delete_source_credentials`` or ``batch_delete_builds`` (HTTP 500). So against moto
``source_credentials_list`` cannot be read: its read raises ``engine.aws.ReadUnavailable`` for
an HTTP 500 without an AWS error code, and the sync leaves the table as it is (no row is made up;
a commit that changes the table fails); and deleting a build row fails (the commit's retry over
all modules plans no delete, so the commit ends and its sync puts the row back; the progress
line ``failed: delete ...`` says why).
"""

from __future__ import annotations

import json
from typing import Any

from engine.aws import CloudError, ReadUnavailable
from engine.modules.aws_account import VERSION
from engine.modules.aws_vpc import VpcModuleMapper
from engine.modules.base import Col, MapperContext, Module, normalize, require_table_privileges, rpc_region

COMPUTE_TYPES = ("BUILD_GENERAL1_SMALL", "BUILD_GENERAL1_MEDIUM", "BUILD_GENERAL1_LARGE", "BUILD_GENERAL1_2XLARGE")
ENVIRONMENT_TYPES = ("ARM_CONTAINER", "LINUX_CONTAINER", "LINUX_GPU_CONTAINER", "WINDOWS_CONTAINER",
                     "WINDOWS_SERVER_2019_CONTAINER")
SOURCE_TYPES = ("GITHUB", "CODEPIPELINE", "NO_SOURCE")
BUILD_STATUSES = ("FAILED", "FAULT", "IN_PROGRESS", "STOPPED", "SUCCEEDED", "TIMED_OUT")


def _env_vars(value: Any) -> Any:
    """``environment_variables`` (JSON text or list) in comparable form; NULL and ``[]`` alike."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return normalize("json", value) if value else None


class CodebuildProjectMapper(VpcModuleMapper):
    """``codebuild_project`` rows <-> CodeBuild projects. Follows IaSQL's ``mappers/project.ts``."""

    table = "codebuild_project"
    columns = (Col("id", "int", "pk"), Col("project_name"), Col("arn", "text", "cloud"), Col("build_spec"),
               Col("source_location"), Col("image"), Col("compute_type"), Col("environment_type"),
               Col("source_version"), Col("source_type"), Col("environment_variables"), Col("privileged_mode", "bool"),
               Col("region"), Col("service_role_name"))
    key = ("project_name", "region")
    pk = ("id",)
    cloud_read_uses_db = True  # service roles are resolved through iam_role

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"CodeBuild project {rec.get('project_name')} ({rec.get('source_type')}) in {rec.get('region')}"

    def _same(self, c: Col, a: Any, b: Any) -> bool:
        if c.name == "source_location":
            return (a or "") == (b or "")
        if c.name == "environment_variables":
            return _env_vars(a) == _env_vars(b)
        return super()._same(c, a, b)

    def needs_replace(self, row: dict, cloud: dict) -> bool:
        """Any change replaces the project, as IaSQL."""
        return True

    async def _roles(self, mc: MapperContext) -> dict:
        """``{role name: role arn}`` of the ``iam_role`` rows."""
        return {n: a for n, a in await mc.fetchall("SELECT role_name, arn FROM public.iam_role")}

    @staticmethod
    def _record(p: dict, region: str, roles: dict) -> dict:
        env, src = p.get("environment") or {}, p.get("source") or {}
        role = (p.get("serviceRole") or "").rsplit("/", 1)[-1] or None
        variables = env.get("environmentVariables") or None
        return {"project_name": p["name"], "arn": p.get("arn"), "build_spec": src.get("buildspec"),
                "source_location": src.get("location") or "", "image": env.get("image") or "aws/codebuild/standard:6.0",
                "compute_type": env.get("computeType") or "BUILD_GENERAL1_SMALL",
                "environment_type": env.get("type") or "LINUX_CONTAINER", "source_version": p.get("sourceVersion"),
                "source_type": src.get("type"),
                "environment_variables": json.dumps(variables) if variables else None,
                "privileged_mode": env.get("privilegedMode", True), "region": region,
                "service_role_name": role if role in roles else None}

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        names = await mc.paginate("codebuild", region, "list_projects", "projects")
        roles = await self._roles(mc)
        out = []
        for i in range(0, len(names), 100):
            res = await mc.call("codebuild", region, "batch_get_projects", names=names[i:i + 100])
            out += [self._record(p, region, roles) for p in res.get("projects") or []
                    if p.get("name") and (p.get("source") or {}).get("type") in SOURCE_TYPES]
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Create the project; returns its record. Raises engine.aws.CloudError (DependencyViolation
        while the service role has no ARN yet)."""
        region = row.get("region") or mc.default_region
        env: dict[str, Any] = {"type": row.get("environment_type") or "LINUX_CONTAINER",
                               "image": row.get("image") or "aws/codebuild/standard:6.0",
                               "computeType": row.get("compute_type") or "BUILD_GENERAL1_SMALL",
                               "privilegedMode": True if row.get("privileged_mode") is None else row["privileged_mode"]}
        variables = row.get("environment_variables")
        if isinstance(variables, str) and variables.strip():
            variables = json.loads(variables)
        if variables:
            env["environmentVariables"] = variables
        source: dict[str, Any] = {"type": row["source_type"]}
        if row.get("source_location"):
            source["location"] = row["source_location"]
        if row.get("build_spec") is not None:
            source["buildspec"] = row["build_spec"]
        kw: dict[str, Any] = {"name": row["project_name"], "environment": env, "source": source,
                              "artifacts": {"type": "CODEPIPELINE" if row["source_type"] == "CODEPIPELINE"
                                            else "NO_ARTIFACTS"}}
        if row.get("source_version") is not None:
            kw["sourceVersion"] = row["source_version"]
        if row.get("service_role_name") is not None:
            arn = (await self._roles(mc)).get(row["service_role_name"])
            if not arn:
                raise CloudError("DependencyViolation", f"iam_role {row['service_role_name']} is not created in the "
                                 "cloud yet", "codebuild.create_project")
            kw["serviceRole"] = arn
        res = await mc.call("codebuild", region, "create_project", **kw)
        return self._record(res["project"], region, await self._roles(mc))

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never planned (projects are replaced). Raises engine.aws.CloudError."""
        raise CloudError("Unsupported", "CodeBuild projects are replaced, not updated", "codebuild.update_project")

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the project. Raises engine.aws.CloudError."""
        await mc.call("codebuild", cloud["region"], "delete_project", name=cloud["project_name"])


class SourceCredentialsListMapper(VpcModuleMapper):
    """``source_credentials_list`` rows <-> CodeBuild source credentials (read-only but for
    deletes). Follows IaSQL's ``mappers/source_credentials.ts``."""

    table = "source_credentials_list"
    columns = (Col("arn"), Col("source_type"), Col("auth_type"), Col("region"))
    key = ("arn",)
    pk = ("arn",)
    cloud_read_uses_db = False

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return f"{rec.get('source_type')} source credential {rec.get('arn')} in {rec.get('region')}"

    def equals(self, row: dict, cloud: dict) -> bool:
        """Always True: a changed row is put back by the sync (IaSQL restores it)."""
        return True

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        try:
            res = await mc.call("codebuild", region, "list_source_credentials")
        except CloudError as e:
            if e.code in ("500", "NotImplemented"):  # the endpoint does not answer this operation at all
                raise ReadUnavailable(e.code, e.aws_message[:200], e.operation) from None
            raise
        return [{"arn": c["arn"], "source_type": c.get("serverType"), "auth_type": c.get("authType"), "region": region}
                for c in res.get("sourceCredentialsInfos") or []
                if c.get("arn") and c.get("serverType") in SOURCE_TYPES]

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Always raises CloudError: credentials are imported, not inserted."""
        raise CloudError("InvalidInputException", "source credentials cannot be inserted: import them with the "
                         "CodeBuild console or `aws codebuild import-source-credentials` (IaSQL's "
                         "import_source_credential RPC is not built in this engine); the next sync reads them",
                         "codebuild.import_source_credentials")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never planned (``equals`` is always True); returns the cloud record."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Delete the credential. Raises engine.aws.CloudError."""
        await mc.call("codebuild", cloud["region"], "delete_source_credentials", arn=cloud["arn"])


class CodebuildBuildListMapper(VpcModuleMapper):
    """``codebuild_build_list`` rows <-> CodeBuild builds (read-only but for deletes). Follows
    IaSQL's ``mappers/build.ts``."""

    table = "codebuild_build_list"
    columns = (Col("id", "int", "pk"), Col("aws_id"), Col("arn", "text", "cloud"), Col("build_number", "int"),
               Col("build_status"), Col("end_time", "timestamp"), Col("start_time", "timestamp"), Col("region"),
               Col("project_name"))
    key = ("aws_id", "region")
    pk = ("id",)
    cloud_read_uses_db = True  # builds of projects without a row are left out

    def describe(self, rec: dict) -> str:
        """The plan-row description of ``rec``."""
        return (f"CodeBuild build {rec.get('aws_id')} ({rec.get('build_status')}) of {rec.get('project_name')} "
                f"in {rec.get('region')}")

    def equals(self, row: dict, cloud: dict) -> bool:
        """Always True: a changed row is put back by the sync (IaSQL restores it)."""
        return True

    async def _records(self, mc: MapperContext, region: str, **filters: Any) -> list[dict]:
        projects = {n for (n,) in await mc.fetchall("SELECT project_name FROM public.codebuild_project "
                                                    "WHERE region = $1", (region,))}
        existing = set(await mc.paginate("codebuild", region, "list_projects", "projects"))
        ids = await mc.paginate("codebuild", region, "list_builds", "ids")
        out = []
        for i in range(0, len(ids), 100):
            res = await mc.call("codebuild", region, "batch_get_builds", ids=ids[i:i + 100])
            for b in res.get("builds") or []:
                if not (b.get("id") and b.get("arn")) or b.get("buildStatus") not in BUILD_STATUSES:
                    continue
                if b.get("projectName") not in existing:
                    continue  # AWS keeps the builds of a deleted project; the table cannot reference it
                out.append({"aws_id": b["id"], "arn": b["arn"], "build_number": b.get("buildNumber"),
                            "build_status": b["buildStatus"], "end_time": b.get("endTime"),
                            "start_time": b.get("startTime"), "region": region, "project_name": b.get("projectName"),
                            "_orphan": b.get("projectName") not in projects})
        return out

    async def create(self, mc: MapperContext, row: dict) -> dict:
        """Always raises CloudError: builds are started, not inserted."""
        raise CloudError("InvalidInputException", "builds cannot be inserted: start them with the start_build "
                         "function (or in CodeBuild; the next sync reads them)",
                         "codebuild.start_build")

    async def update(self, mc: MapperContext, row: dict, cloud: dict) -> dict:
        """Never planned (``equals`` is always True); returns the cloud record."""
        return cloud

    async def delete(self, mc: MapperContext, cloud: dict) -> None:
        """Stop the build when it is in progress, then delete it. Raises engine.aws.CloudError."""
        region = cloud["region"]
        if cloud.get("build_status") == "IN_PROGRESS":
            await mc.call("codebuild", region, "stop_build", id=cloud["aws_id"])
        res = await mc.call("codebuild", region, "batch_delete_builds", ids=[cloud["aws_id"]])
        failed = res.get("buildsNotDeleted") or []
        if failed:
            raise CloudError(str(failed[0].get("statusCode") or "BuildNotDeleted"),
                             f"build {cloud['aws_id']} was not deleted", "codebuild.batch_delete_builds")


#: How long ``start_build`` waits for the build to end (IaSQL's waiter: 900 s, polls 1 s to 4 s apart)
BUILD_WAIT_SECONDS = 900.0


async def _wait_for_build(s: Any, mc: MapperContext, region: str, build: dict) -> dict | None:
    """Poll ``batch_get_builds`` until ``build`` has ended (not ``IN_PROGRESS``, or an end time)
    or ``BUILD_WAIT_SECONDS`` have passed; returns its last description (None when CodeBuild no
    longer lists it). Raises EngineError 57014 when the client cancels, engine.aws.CloudError."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUILD_WAIT_SECONDS
    delay = 1.0
    while True:
        s.check_cancelled()
        res = await mc.call("codebuild", region, "batch_get_builds", ids=[build["id"]])
        found = [b for b in res.get("builds") or [] if b.get("id") == build["id"]]
        if not found:
            return None
        build = found[0]
        if build.get("buildStatus") != "IN_PROGRESS" or build.get("endTime"):
            return build
        left = deadline - loop.time()
        if left <= 0:
            return build
        try:  # wakes at once on a CancelRequest
            await asyncio.wait_for(s.ctx.cancelled.wait(), min(delay, left))
        except TimeoutError:
            pass
        delay = min(delay * 2, 4.0)


async def start_build(state: Any, ctx: Any, project_name: Any, region: Any = None) -> list[tuple]:
    """IaSQL's ``start_build`` RPC (``src/modules/aws_codebuild/rpcs/start_build.ts``): start a
    build of CodeBuild project ``project_name`` in ``region``, as the caller, in the caller's
    transaction.

    Takes the engine state, the ``CallContext``, the ``varchar`` project name and the ``varchar``
    region (NULL, the declared default, means ``default_aws_region()``, IaSQL's default). Calls
    ``start_build``, then waits as IaSQL does until the build has ended (``batch_get_builds``
    every 1 to 4 s, at most ``BUILD_WAIT_SECONDS``, 900 s; after that the build is recorded as it
    is then, e.g. ``IN_PROGRESS``), and records it in ``codebuild_build_list`` (aws_id, arn,
    build number, status, start and end time, region, project) when the project has a
    ``codebuild_project`` row in that region (without one the table cannot reference it, as in the
    sync). Returns one row (name, status, message): IaSQL's ``OK`` and ``''``; ``KO`` with IaSQL's
    ``Error launching build`` when CodeBuild answers without a build id, or ``Error getting status
    of build`` when it no longer lists the build. Unlike IaSQL, which answers with a row, a missing
    name or project is an error: EngineError 22004 (IaSQL's ``Please provide the name of the
    CodeBuild project to build`` when the name is NULL or empty), 22023 (``region`` is not a region
    of ``aws_regions``), 42704 (IaSQL's ``Codebuild project not found``: CodeBuild has no such
    project in that region), 42501 (the project has a row and the caller may not INSERT into
    ``codebuild_build_list``: checked before the build is started), 58000 (any other AWS
    failure), 57014 (cancelled; a build already started keeps running and the next sync reads it),
    the server's SQLSTATE when the row cannot be written.
    """
    from engine.core.functions import mapper_context
    from engine.core.session import EngineSession
    from engine.rpc import EngineError

    if not project_name:
        raise EngineError("22004", "Please provide the name of the CodeBuild project to build")
    async with EngineSession(ctx, state, "start_build") as s:
        mc = await mapper_context(s)
        region = await rpc_region(s, mc, "start_build", region)
        has_row = await s.fetchone("SELECT 1 FROM public.codebuild_project WHERE project_name = $1 AND region = $2",
                                   (project_name, region))
        if has_row:
            await require_table_privileges(s, "start_build", "codebuild_build_list", ("INSERT",), "the build")
        s.check_cancelled()
        try:
            res = await mc.call("codebuild", region, "start_build", projectName=project_name)
        except CloudError as e:
            if e.code == "ResourceNotFoundException":
                raise EngineError("42704", "Codebuild project not found",
                                  detail=f"CodeBuild has no project {project_name} in {region}: {e}") from None
            raise
        build = res.get("build") or {}
        if not build.get("id"):
            return [(project_name, "KO", "Error launching build")]
        ctx.progress(f"started build {build['id']} of CodeBuild project {project_name} in {region}")
        build = await _wait_for_build(s, mc, region, build)
        if build is None:
            return [(project_name, "KO", "Error getting status of build")]
        ctx.progress(f"build {build['id']} ended: {build.get('buildStatus')}")
        if has_row and build.get("arn") and build.get("buildStatus") in BUILD_STATUSES:
            await s.execute(
                "INSERT INTO public.codebuild_build_list (aws_id, arn, build_number, build_status, end_time, "
                "start_time, region, project_name) VALUES ($1, $2, $3, $4::public.codebuild_build_list_build_status_enum, "
                "$5, $6, $7, $8) ON CONFLICT (aws_id, region) DO NOTHING",
                (build["id"], build["arn"], build.get("buildNumber"), build["buildStatus"], build.get("endTime"),
                 build.get("startTime"), region, project_name))
        return [(project_name, "OK", "")]


def _rpcs() -> tuple:
    """The module's RPC declarations (``Module.rpcs``)."""
    from engine.rpc import Argument, Column, Function

    return (
        Function(
            name="start_build",
            arguments=(Argument("project_name", "varchar"), Argument("region", "varchar", default=None)),
            columns=(Column("name", "varchar"), Column("status", "varchar"), Column("message", "varchar")),
            impl=start_build,
            description="Starts a build of a CodeBuild project, waits until it ends and records it in "
                        "codebuild_build_list",
            sample_usage="SELECT * FROM start_build('my-project')",
            mutating=True,
        ),
    )


_BUILD_SPEC_SQL = r"""CREATE OR REPLACE FUNCTION public.generate_put_ecr_image_build_spec(
  region text, image_tag text, repo_name text, repo_uri text, build_path text,
  build_args text[] DEFAULT ARRAY[]::text[]) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RETURN 'version: 0.2

phases:
  pre_build:
    commands:
      - echo Logging in to Amazon ECR...
      - aws ecr get-login-password --region ' || region || ' | docker login --username AWS --password-stdin ' || repo_uri || '
  build:
    commands:
      - echo Building the Docker image...
      - docker build' || (CASE WHEN pg_catalog.array_length(build_args, 1) > 0 THEN ' --build-arg ' || pg_catalog.array_to_string(build_args, ' --build-arg ') ELSE '' END) || ' -t ' || repo_name || ' ' || build_path || '
      - docker tag ' || repo_name || ':' || image_tag || ' ' || repo_uri || ':latest
  post_build:
    commands:
      - echo Pushing the Docker image...
      - docker push ' || repo_uri || ':' || image_tag;
END
$$"""

INSTALL_SQL = (
    "CREATE TYPE public.codebuild_project_compute_type_enum AS ENUM ("
    + ", ".join(f"'{t}'" for t in COMPUTE_TYPES) + ")",
    "CREATE TYPE public.codebuild_project_environment_type_enum AS ENUM ("
    + ", ".join(f"'{t}'" for t in ENVIRONMENT_TYPES) + ")",
    "CREATE TYPE public.codebuild_project_source_type_enum AS ENUM ('GITHUB', 'CODEPIPELINE', 'NO_SOURCE')",
    """CREATE TABLE public.codebuild_project (
         id SERIAL NOT NULL,
         project_name character varying NOT NULL,
         arn character varying,
         build_spec text,
         source_location character varying,
         image character varying NOT NULL DEFAULT 'aws/codebuild/standard:6.0',
         compute_type public.codebuild_project_compute_type_enum NOT NULL DEFAULT 'BUILD_GENERAL1_SMALL',
         environment_type public.codebuild_project_environment_type_enum NOT NULL DEFAULT 'LINUX_CONTAINER',
         source_version character varying,
         source_type public.codebuild_project_source_type_enum NOT NULL,
         environment_variables text,
         privileged_mode boolean NOT NULL DEFAULT true,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         service_role_name character varying,
         CONSTRAINT uq_codebuildproject_name_region UNIQUE (project_name, region),
         CONSTRAINT uq_codebuildproject_id_region UNIQUE (id, region),
         CONSTRAINT "PK_7ad09b6ae15953c98345038ea57" PRIMARY KEY (id),
         CONSTRAINT "FK_75407540d48925c3555c05543c3" FOREIGN KEY (service_role_name) REFERENCES public.iam_role (role_name),
         CONSTRAINT "FK_7f9fd2d9eea87e92a9748b3bfa0" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    "CREATE TYPE public.codebuild_build_list_build_status_enum AS ENUM ("
    + ", ".join(f"'{t}'" for t in BUILD_STATUSES) + ")",
    """CREATE TABLE public.codebuild_build_list (
         id SERIAL NOT NULL,
         aws_id character varying NOT NULL,
         arn character varying,
         build_number integer,
         build_status public.codebuild_build_list_build_status_enum NOT NULL,
         end_time TIMESTAMP,
         start_time TIMESTAMP,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         project_name character varying,
         CONSTRAINT uq_codebuildlist_name_region UNIQUE (aws_id, region),
         CONSTRAINT uq_codebuildlist_id_region UNIQUE (id, region),
         CONSTRAINT "PK_50a7a7e05b0b8067c138324fa17" PRIMARY KEY (id),
         CONSTRAINT "FK_a10d877414684a4c96249d4fa82" FOREIGN KEY (project_name, region)
           REFERENCES public.codebuild_project (project_name, region),
         CONSTRAINT "FK_6832b4b361539b03981122a1457" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    "CREATE TYPE public.source_credentials_list_source_type_enum AS ENUM ('GITHUB', 'CODEPIPELINE', 'NO_SOURCE')",
    """CREATE TABLE public.source_credentials_list (
         arn character varying NOT NULL,
         source_type public.source_credentials_list_source_type_enum NOT NULL,
         auth_type character varying NOT NULL,
         region character varying NOT NULL DEFAULT public.default_aws_region(),
         CONSTRAINT "PK_8a8d9825b66a947e97685094d19" PRIMARY KEY (arn),
         CONSTRAINT "FK_cf3f27bc4e304c5edb53ed4794a" FOREIGN KEY (region) REFERENCES public.aws_regions (region))""",
    _BUILD_SPEC_SQL,
)

UNINSTALL_SQL = (
    "DROP FUNCTION public.generate_put_ecr_image_build_spec(text, text, text, text, text, text[])",
    "DROP TABLE public.source_credentials_list",
    "DROP TYPE public.source_credentials_list_source_type_enum",
    "DROP TABLE public.codebuild_build_list",
    "DROP TYPE public.codebuild_build_list_build_status_enum",
    "DROP TABLE public.codebuild_project",
    "DROP TYPE public.codebuild_project_source_type_enum",
    "DROP TYPE public.codebuild_project_environment_type_enum",
    "DROP TYPE public.codebuild_project_compute_type_enum",
)

MODULE = Module(
    name="aws_codebuild",
    version=VERSION,
    dependencies=("aws_account", "aws_iam"),
    install_sql=INSTALL_SQL,
    uninstall_sql=UNINSTALL_SQL,
    mappers=(CodebuildProjectMapper(), SourceCredentialsListMapper(), CodebuildBuildListMapper()),
    description="CodeBuild projects, builds and source credentials",
    functions=(
        ("generate_put_ecr_image_build_spec",
         ("generate_put_ecr_image_build_spec(region text, image_tag text, repo_name text, repo_uri text, "
          "build_path text, build_args text[] DEFAULT '{}')"),
         ("A CodeBuild build spec that builds the Docker image at build_path and pushes it to the ECR "
          "repository repo_uri (IaSQL's aws_codebuild SQL function)"),
         ("SELECT generate_put_ecr_image_build_spec('us-east-1', 'latest', 'app', "
          "'123456789012.dkr.ecr.us-east-1.amazonaws.com/app', '.')")),
    ),
    rpcs=_rpcs(),
)
