"""Checks Anthropic Messages request bodies against the official `anthropic` SDK's request types.

Reads a JSON array of request bodies on stdin (as the fake recorded them) and validates each
against `MessageCreateParamsNonStreaming` with unknown fields forbidden. Prints one line per
body (`ok` or the errors) and exits 1 when any body is invalid.
"""
import json
import sys

import pydantic
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

# An unknown top-level field is an error (the SDK would refuse to send it).
MessageCreateParamsNonStreaming.__pydantic_config__ = pydantic.ConfigDict(extra="forbid")
adapter = pydantic.TypeAdapter(MessageCreateParamsNonStreaming)
bodies = json.load(sys.stdin)
bad = 0
for i, body in enumerate(bodies):
    try:
        adapter.validate_python(body, strict=True)
        print(f"{i}: ok")
    except pydantic.ValidationError as e:
        bad += 1
        print(f"{i}: {e}")
if not bodies:
    print("no bodies to check")
    bad = 1
sys.exit(1 if bad else 0)
