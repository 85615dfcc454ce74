"""All installable modules. Adding a module: one file with a ``MODULE``, one line in ``MODULES``."""

from __future__ import annotations

from engine.modules import (aws_account, aws_acm, aws_api_gateway, aws_cloudwatch, aws_codebuild, aws_dynamo, aws_ec2,
                            aws_ec2_metadata, aws_ecr, aws_elb, aws_iam, aws_lambda, aws_memory_db, aws_rds,
                            aws_route53, aws_s3, aws_secrets_manager, aws_security_group, aws_sns, aws_sqs, aws_vpc)
from engine.modules.base import Col, Mapper, MapperContext, Module

#: IaSQL platform version these modules belong to (``iasql_version()``).
VERSION = aws_account.VERSION

MODULES: tuple[Module, ...] = (
    aws_account.MODULE,
    aws_s3.MODULE,
    aws_iam.MODULE,
    aws_vpc.MODULE,
    aws_security_group.MODULE,
    aws_ec2.MODULE,
    aws_ec2_metadata.MODULE,
    aws_sqs.MODULE,
    aws_sns.MODULE,
    aws_cloudwatch.MODULE,
    aws_ecr.MODULE,
    aws_dynamo.MODULE,
    aws_secrets_manager.MODULE,
    aws_acm.MODULE,
    aws_route53.MODULE,
    aws_elb.MODULE,
    aws_lambda.MODULE,
    aws_rds.MODULE,
    aws_memory_db.MODULE,
    aws_api_gateway.MODULE,
    aws_codebuild.MODULE,
)

__all__ = ["Col", "Mapper", "MapperContext", "Module", "MODULES", "VERSION"]
