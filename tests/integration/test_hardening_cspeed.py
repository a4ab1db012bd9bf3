"""Structured output's correctness gaps closed by the compile-speed work (issue 26), through real nginx and llmcgi.

Uses test_structured.py's server (a random-weight GPT-2 with the real tokenizer,
sampled at temperature 1) and its helpers:
* oneOf whose branches may validate the same value is a 400 naming the two
  branches (it was compiled as anyOf, so an output could validate both and fail
  oneOf); a tagged union (a required const property) is taken, and every output
  validates against it (jsonschema checks oneOf's "exactly one").
* pattern together with minLength/maxLength (refused before) is the
  intersection: every output matches the pattern and has an allowed length.
* The same schema asked for again and again, with others between (the cache of
  compiled constraints, and each model's masks kept across requests), still
  gives valid outputs every time.
"""

import json

import pytest

from servers import require_module
from test_structured import client, server, validate  # noqa: F401 -- server is the module's fixture

TAGGED = {"oneOf": [
    {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "integer"}},
     "required": ["kind", "r"], "additionalProperties": False},
    {"$ref": "#/$defs/Rect"}],
    "$defs": {"Rect": {"type": "object", "properties": {"kind": {"enum": ["rect", "square"]},
                                                       "w": {"type": "integer"}},
                       "required": ["kind"], "additionalProperties": False}}}


def ask(c, schema, seed, max_tokens=80):
    r = c.completions.create(model="tiny", prompt="JSON:", seed=seed, max_tokens=max_tokens,
                             extra_body={"guided_json": schema})
    return json.loads(r.choices[0].text)


def test_overlapping_one_of_is_refused_naming_the_branches(server):  # noqa: F811
    openai = require_module("openai", "openai")
    c = client(server)
    cases = [{"oneOf": [{"type": "integer"}, {"type": "number"}]},
             {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"a": {"type": "string"}}},
                        {"type": "object", "properties": {"b": {"type": "string"}}}]}]
    for schema, branches in zip(cases, ("branches 0 and 1", "branches 1 and 2")):
        with pytest.raises(openai.BadRequestError, match=branches + " may both match") as e:
            c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=5,
                                      response_format={"type": "json_schema",
                                                       "json_schema": {"name": "x", "schema": schema}})
        assert e.value.body["param"] == "response_format"
        assert "anyOf" in e.value.body["message"]


def test_tagged_one_of_outputs_validate(server):  # noqa: F811
    c = client(server)
    for seed in range(6):
        validate(ask(c, TAGGED, seed), TAGGED)


def test_pattern_with_lengths_is_their_intersection(server):  # noqa: F811
    c = client(server)
    schema = {"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[a-z0-9]+$", "minLength": 3, "maxLength": 5},
        "note": {"type": "string", "pattern": "^(ab|c)*$", "maxLength": 4}},
        "required": ["code", "note"], "additionalProperties": False}
    for seed in range(6):
        v = ask(c, schema, seed)
        validate(v, schema)
        assert 3 <= len(v["code"]) <= 5 and len(v["note"]) <= 4, v


def test_repeated_schema_stays_right_across_requests(server):  # noqa: F811
    c = client(server)
    other = {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}
    for seed in range(8):
        validate(ask(c, TAGGED, seed), TAGGED)
        validate(ask(c, other, seed, max_tokens=30), other)
