"""Validates an ECS task definition against the RegisterTaskDefinition input
shape that botocore carries (the ECS API's own parameter model).

usage: check_ecs.py TASK_DEFINITION.json
Prints nothing and exits 0 when valid; prints the problems and exits 1.
"""
import json
import sys

import botocore.session
from botocore.validate import ParamValidator

definition = json.load(open(sys.argv[1]))
model = botocore.session.get_session().get_service_model("ecs")
shape = model.operation_model("RegisterTaskDefinition").input_shape
report = ParamValidator().validate(definition, shape)
if report.has_errors():
    print(report.generate_report())
    sys.exit(1)
