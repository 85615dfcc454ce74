"""All installable modules. Adding a module: one file with a ``MODULE``, one line in ``MODULES``."""

from __future__ import annotations

from engine.modules import aws_account, aws_elb, aws_iam, aws_lambda, aws_s3, aws_security_group, aws_vpc
from engine.modules.base import Col, Mapper, MapperContext, Module

#: IaSQL platform version these modules belong to (``iasql_version()``).
VERSION = aws_account.VERSION

MODULES: tuple[Module, ...] = (
    aws_account.MODULE,
    aws_s3.MODULE,
    aws_iam.MODULE,
    aws_vpc.MODULE,
    aws_security_group.MODULE,
    aws_elb.MODULE,
    aws_lambda.MODULE,
)

__all__ = ["Col", "Mapper", "MapperContext", "Module", "MODULES", "VERSION"]
