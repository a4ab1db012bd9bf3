"""Stand-in upstream model servers for llmcgi's gateway tests, with fault injection.

llmcgi proxies client requests to upstream model servers with libcurl. These
stand-ins answer like the real ones, byte for byte where it matters to a
proxy, but generate a fixed, deterministic token sequence instead of running
a model, and can be told to misbehave (5xx, hang, slow, malformed, drop
mid-body, huge, close at once, keep-alive comments and nothing else), or
answer exactly what a test gives (mode ``body``: ``body`` as a whole answer,
or ``events`` as an event stream, with ``code`` and extra ``headers``).

Flavors, each written from the documented public API of the real server:

* ``tgi``: Hugging Face text-generation-inference 2.x router (``/health``,
  ``/info``, ``/generate``, ``/generate_stream``, ``/`` and its OpenAI
  "Messages API": ``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/models``). Errors ``{"error","error_type"}``; SSE written by axum, so
  ``data:`` has no space after the colon; TGI streams end with the event
  carrying ``generated_text``, no ``[DONE]`` (the Messages API does send one).
* ``openai``: the OpenAI REST API as served by OpenAI-compatible servers such
  as vLLM (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/responses``, ``/v1/embeddings``, ``/health``). Embeddings are
  ``[len(text), index, 0.25]`` per input; a response holds the chat's text,
  streamed as the Responses API's typed events (``event:`` lines, no ``[DONE]``). Errors ``{"error":{"message","type","param","code"}}``;
  streams ``data: {chunk}`` ... ``data: [DONE]``.
* ``transformers-serve``: the ``transformers serve`` CLI (FastAPI) of
  transformers >= 4.5x (``/health``, ``/v1/models``,
  ``/v1/chat/completions`` only). Rejects unknown body keys with 422 and ends
  streams without ``[DONE]``.

Generation: for a prompt and a budget of N tokens, token i has text
``" " + WORDS[i % 8]``, id ``100 + i``, logprob -0.5. A prompt containing the
word ``EOS`` ends after 3 tokens (end of sequence); a stop sequence equal to a
token's stripped text ends after that token; otherwise the budget ends it.

Use from a test::

    s = Standin("tgi").start()
    s.set_fault("status", code=503, times=2)
    ... drive llmcgi against s.url ...
    assert s.count("/generate") == 3
    s.stop()

or as a process: ``python3 standin.py --flavor tgi --port 8081`` prints
``READY <port>`` and serves until SIGTERM; ``POST /_control`` with
``{"mode": ..., params...}`` sets a fault, ``GET /_requests`` lists the
requests received, ``DELETE /_requests`` forgets them.

Python 3.11 standard library only; every blocking wait is bounded (60 s at
most) and nothing is logged per request.
"""

import argparse
import itertools
import json
import re
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
FLAVORS = ("tgi", "openai", "transformers-serve")
FAULT_MODES = ("ok", "status", "hang", "delay", "trickle", "malformed", "drop",
               "huge", "close", "error_event", "body", "comments")
MAX_WAIT = 60.0          # no wait anywhere lasts longer than this (seconds)
TGI_VERSION = "2.4.0"
TGI_MAX_STOP = 4
TGI_MAX_INPUT = 1024
TGI_MAX_TOTAL = 2048
TGI_DEFAULT_MAX_NEW = 20
OPENAI_DEFAULT_MAX = 16
CREATED = 1700000000
# TGI maps InferError::GenerationError to 424 Failed Dependency; the unknown
# LoRA adapter error is one of those.
ADAPTER_ERROR_STATUS = 424
# `transformers serve` checks the body's keys against OpenAI's chat completion
# request type (plus its own extras) and rejects anything else.
TRANSFORMERS_CHAT_KEYS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "seed", "stop",
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
    "top_logprobs", "n", "response_format", "tools", "tool_choice", "user",
    # the rest of openai's CompletionCreateParams, and transformers' extras
    "audio", "function_call", "functions", "metadata", "modalities",
    "parallel_tool_calls", "prediction", "reasoning_effort", "service_tier",
    "store", "web_search_options", "generation_config", "request_id",
})
HUGE_MARKER = "@@STANDIN-HUGE@@"
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 422: "Unprocessable Entity",
           424: "Failed Dependency", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


# ---------------------------------------------------------------- generation

class Generation:
    """The tokens generated for one prompt: list of (id, text), and why it ended
    ("length", "eos" or "stop")."""

    def __init__(self, tokens, finish):
        self.tokens = tokens
        self.finish = finish

    @property
    def text(self):
        return "".join(t for _, t in self.tokens)

    def visible(self, strip_stop):
        """Tokens shown to the client: OpenAI leaves the matched stop sequence
        out of the text, TGI keeps it."""
        if strip_stop and self.finish == "stop":
            return self.tokens[:-1]
        return self.tokens


def generate(prompt, budget, stops=()):
    stops = set(stops or ())
    eos = re.search(r"\bEOS\b", prompt or "") is not None
    tokens = []
    for i in range(budget):
        text = " " + WORDS[i % len(WORDS)]
        tokens.append((100 + i, text))
        if text.strip() in stops:
            return Generation(tokens, "stop")
        if eos and i == 2:
            return Generation(tokens, "eos")
    return Generation(tokens, "length")


def word_count(text):
    return len(text.split()) if isinstance(text, str) else 0


def content_text(content):
    """A chat message's content as text (a string, or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


TGI_FINISH = {"length": "length", "eos": "eos_token", "stop": "stop_sequence"}
# TGI's Messages API formats finish reasons with FinishReason::format(true):
# only eos_token becomes "stop"; a stop sequence stays "stop_sequence".
TGI_CHAT_FINISH = {"length": "length", "eos": "stop", "stop": "stop_sequence"}
OPENAI_FINISH = {"length": "length", "eos": "stop", "stop": "stop"}


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


# -------------------------------------------------------------- request jobs

class Job:
    """A generation request that passed validation: how to build its
    Generation (`make_gen(budget=None)`), and how to answer it whole
    (`whole(gen)` -> JSON object) or streamed (`events(gen)` -> SSE event
    bytes, then the `end` events, e.g. [DONE]). Faults are applied by the
    handler around these."""

    def __init__(self, stream, make_gen, whole, events, sse, error_event):
        self.stream = stream
        self.make_gen = make_gen
        self.whole = whole
        self.events = events
        self.sse = sse                # b"data:" (TGI/axum) or b"data: "
        self.error_event = error_event  # message -> event bytes
        self.end = []                 # terminator events (e.g. [DONE])


class Reply(Exception):
    """Raised by a route to answer at once: (code, JSON object or bytes)."""

    def __init__(self, code, body, ctype="application/json", headers=()):
        super().__init__(code)
        self.code = code
        self.body = body
        self.ctype = ctype
        self.headers = list(headers)


def sse_event(prefix, obj):
    data = obj if isinstance(obj, str) else dumps(obj)
    return prefix + data.encode() + b"\n\n"


# ------------------------------------------------------------------- flavors

class Flavor:
    """Routes and shapes shared by the OpenAI-style flavors."""

    name = "openai"
    sse = b"data: "
    strip_stop = True

    def __init__(self, standin):
        self.s = standin
        self.ids = itertools.count(1)
        self.route_table = self.routes()

    # --- errors
    def error(self, code, message, etype=None, param=None, ecode=None):
        etype = etype or {400: "invalid_request_error", 401: "invalid_request_error",
                          404: "invalid_request_error", 422: "invalid_request_error",
                          429: "requests"}.get(code, "server_error")
        if code == 429 and ecode is None:
            ecode = "rate_limit_exceeded"
        return Reply(code, {"error": {"message": message, "type": etype,
                                      "param": param, "code": ecode}})

    def fault_error(self, code, message, etype=None):
        return self.error(code, message or f"standin fault: status {code}", etype)

    def not_found(self):
        return Reply(404, {"detail": "Not Found"})

    def auth_error(self, given):
        return self.error(401, f"Incorrect API key provided: {given or '(none)'}.",
                          ecode="invalid_api_key")

    # --- routes
    def routes(self):
        return {
            ("GET", "/health"): ("health", self.health),
            ("GET", "/v1/models"): ("health", self.models),
            ("POST", "/v1/chat/completions"): ("gen", self.chat),
            ("POST", "/v1/completions"): ("gen", self.completions),
            ("POST", "/v1/responses"): ("gen", self.responses),
            ("POST", "/v1/embeddings"): ("gen", self.embeddings),
        }

    def prefix_routes(self):
        return {("GET", "/v1/models/"): ("health", self.model)}

    # --- embeddings
    def embeddings(self, req):
        body = self.body(req)
        model = self.resolve_model(body)
        inp = body.get("input")
        items = [inp] if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)) else inp
        if not isinstance(items, list) or not items:
            raise self.error(400, "'input' is invalid.", param="input")
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 0.25]}
                for i, t in enumerate(items)]
        ptok = sum(word_count(t) if isinstance(t, str) else len(t) for t in items)
        raise Reply(200, {"object": "list", "data": data, "model": model,
                          "usage": {"prompt_tokens": ptok, "total_tokens": ptok}})

    # --- the Responses API
    def responses(self, req):
        body = self.body(req)
        model = self.resolve_model(body)
        inp = body.get("input")
        if isinstance(inp, str):
            last = inp
        elif isinstance(inp, list) and inp and isinstance(inp[-1], dict):
            last = content_text(inp[-1].get("content"))
        else:
            raise self.error(400, "'input' is invalid.", param="input")
        budget = body.get("max_output_tokens") or OPENAI_DEFAULT_MAX
        rid, created, seq = self.new_id("resp"), int(time.time()), itertools.count()
        ptok = word_count(last)

        def make_gen(b=None):
            return generate(last, budget if b is None else b)

        def response(gen, status):
            text = "".join(t for _, t in gen.visible(True)) if gen else ""
            done = status != "in_progress"
            out = [{"type": "message", "id": "msg_" + rid, "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}] if done else []
            return {"id": rid, "object": "response", "created_at": created, "status": status, "model": model,
                    "output": out, "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete"
                    else None, "usage": {"input_tokens": ptok, "output_tokens": len(gen.tokens),
                                         "total_tokens": ptok + len(gen.tokens)} if done else None}

        def whole(gen):
            return response(gen, "incomplete" if gen.finish == "length" else "completed")

        def event(obj):
            obj["sequence_number"] = next(seq)
            return b"event: " + obj["type"].encode() + b"\n" + sse_event(self.sse, obj)

        def events(gen):
            yield event({"type": "response.created", "response": response(None, "in_progress")})
            for _, t in gen.visible(True):
                yield event({"type": "response.output_text.delta", "item_id": "msg_" + rid, "output_index": 0,
                             "content_index": 0, "delta": t})
            last = whole(gen)
            yield event({"type": "response." + last["status"], "response": last})

        return Job(bool(body.get("stream")), make_gen, whole, events, self.sse, self.stream_error)

    def health(self, req):
        raise Reply(200, b"", ctype="text/plain")

    def model_object(self, mid):
        return {"id": mid, "object": "model", "created": CREATED, "owned_by": "standin"}

    def models(self, req):
        raise Reply(200, {"object": "list",
                          "data": [self.model_object(m) for m in self.s.model_ids]})

    def model(self, req):
        mid = req.path.split("?", 1)[0][len("/v1/models/"):]
        if mid not in self.s.model_ids:
            raise self.model_error(mid)
        raise Reply(200, self.model_object(mid))

    def model_error(self, mid):
        return self.error(404, f"The model `{mid}` does not exist.",
                          param="model", ecode="model_not_found")

    def body(self, req):
        if not isinstance(req.json, dict):
            raise self.error(400, "We could not parse the JSON body of your request.")
        return req.json

    def resolve_model(self, body):
        mid = body.get("model")
        if mid is None:           # vLLM: no model means the served one
            return self.s.model_ids[0]
        if not isinstance(mid, str) or mid not in self.s.model_ids:
            raise self.model_error(mid)
        return mid

    def budget(self, body, default=OPENAI_DEFAULT_MAX):
        n = body.get("max_completion_tokens")
        if n is None:
            n = body.get("max_tokens")
        if n is None:
            return default
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise self.error(400, "max_tokens must be at least 1, got %r." % (n,),
                             param="max_tokens")
        return n

    def stops(self, body):
        stop = body.get("stop")
        if stop is None:
            return []
        if isinstance(stop, str):
            return [stop]
        if isinstance(stop, list) and all(isinstance(x, str) for x in stop):
            return stop
        raise self.error(400, "'stop' must be a string or a list of strings.", param="stop")

    def n_choices(self, body):
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise self.error(400, "n must be between 1 and 128.", param="n")
        return n

    def new_id(self, prefix):
        return f"{prefix}-standin{next(self.ids):08x}"

    # --- chat
    def chat(self, req):
        body = self.body(req)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self.error(400, "'messages' is a required property and must be a "
                             "non-empty array.", param="messages")
        model = self.resolve_model(body)
        budget, stops, n = self.budget(body), self.stops(body), self.n_choices(body)
        last = content_text(messages[-1].get("content") if isinstance(messages[-1], dict) else None)
        ptok = sum(word_count(content_text(m.get("content")))
                   for m in messages if isinstance(m, dict))
        return self.chat_job(body, model, last, ptok, budget, stops, n)

    def chat_job(self, body, model, prompt, ptok, budget, stops, n):
        cid, created = self.new_id("chatcmpl"), int(time.time())
        want_lp = bool(body.get("logprobs"))
        top = body.get("top_logprobs") or 0
        usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))

        def make_gen(b=None):
            return generate(prompt, budget if b is None else b, stops)

        def whole(gen):
            toks = gen.visible(self.strip_stop)
            text = "".join(t for _, t in toks)
            choices = [{"index": i,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": self.chat_logprobs(toks, top) if want_lp else None,
                        "finish_reason": OPENAI_FINISH[gen.finish]} for i in range(n)]
            return {"id": cid, "object": "chat.completion", "created": created,
                    "model": model, "choices": choices,
                    "usage": self.usage(ptok, len(gen.tokens) * n)}

        def chunk(choices):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": model, "choices": choices}
            if usage_chunk:
                c["usage"] = None
            return c

        def choice(i, delta, finish=None, lp=None):
            return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}

        def events(gen):
            toks = gen.visible(self.strip_stop)
            for i in range(n):
                yield sse_event(self.sse, chunk([choice(i, {"role": "assistant", "content": ""})]))
            for tok in toks:
                lp = self.chat_logprobs([tok], top) if want_lp else None
                for i in range(n):
                    yield sse_event(self.sse, chunk([choice(i, {"content": tok[1]}, lp=lp)]))
            for i in range(n):
                yield sse_event(self.sse, chunk([choice(i, {}, OPENAI_FINISH[gen.finish])]))
            if usage_chunk:
                last = chunk([])
                last["usage"] = self.usage(ptok, len(gen.tokens) * n)
                yield sse_event(self.sse, last)

        job = Job(bool(body.get("stream")), make_gen, whole, events, self.sse,
                  self.stream_error)
        job.end = [self.sse + b"[DONE]\n\n"]
        return job

    # --- completions
    def completions(self, req):
        body = self.body(req)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            prompts = [" ".join("t%d" % p for p in prompt)]   # token ids: one word each
        else:
            raise self.error(400, "'prompt' is a required property.", param="prompt")
        model = self.resolve_model(body)
        budget, stops, n = self.budget(body), self.stops(body), self.n_choices(body)
        return self.completion_job(body, model, prompts, budget, stops, n)

    def completion_job(self, body, model, prompts, budget, stops, n):
        cid, created = self.new_id("cmpl"), int(time.time())
        echo = bool(body.get("echo"))
        lp_n = body.get("logprobs")
        usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))
        ptok = sum(word_count(p) for p in prompts)

        def make_gen(b=None):
            return generate(prompts[0], budget if b is None else b, stops)

        def gens(first):
            # one Generation per prompt (faults build only the first)
            return [first] + [generate(p, budget, stops) for p in prompts[1:]]

        def whole(gen):
            choices, ctok = [], 0
            for pi, g in enumerate(gens(gen)):
                toks = g.visible(self.strip_stop)
                text = (prompts[pi] if echo else "") + "".join(t for _, t in toks)
                for k in range(n):
                    choices.append({"index": pi * n + k, "text": text,
                                    "logprobs": self.completion_logprobs(toks, lp_n)
                                    if lp_n is not None else None,
                                    "finish_reason": OPENAI_FINISH[g.finish]})
                    ctok += len(g.tokens)
            return {"id": cid, "object": "text_completion", "created": created,
                    "model": model, "choices": choices, "usage": self.usage(ptok, ctok)}

        def chunk(choices):
            c = {"id": cid, "object": "text_completion", "created": created,
                 "model": model, "choices": choices}
            if usage_chunk:
                c["usage"] = None
            return c

        def events(gen):
            ctok = 0
            for pi, g in enumerate(gens(gen)):
                toks = g.visible(self.strip_stop)
                for k in range(n):
                    idx = pi * n + k
                    if echo:
                        yield sse_event(self.sse, chunk([{"index": idx, "text": prompts[pi],
                                                          "logprobs": None, "finish_reason": None}]))
                    for tok in toks:
                        lp = self.completion_logprobs([tok], lp_n) if lp_n is not None else None
                        yield sse_event(self.sse, chunk([{"index": idx, "text": tok[1],
                                                          "logprobs": lp, "finish_reason": None}]))
                    yield sse_event(self.sse, chunk([{"index": idx, "text": "", "logprobs": None,
                                                      "finish_reason": OPENAI_FINISH[g.finish]}]))
                    ctok += len(g.tokens)
            if usage_chunk:
                last = chunk([])
                last["usage"] = self.usage(ptok, ctok)
                yield sse_event(self.sse, last)

        job = Job(bool(body.get("stream")), make_gen, whole, events, self.sse,
                  self.stream_error)
        job.end = [self.sse + b"[DONE]\n\n"]
        return job

    # --- pieces
    @staticmethod
    def usage(ptok, ctok):
        return {"prompt_tokens": ptok, "completion_tokens": ctok,
                "total_tokens": ptok + ctok}

    @staticmethod
    def alternatives(text, k):
        """Top-k alternatives for a token: itself first, then other words."""
        word = text.strip()
        others = [w for w in WORDS if w != word]
        alts = [(text, -0.5)] + [(" " + w, -2.0 - j) for j, w in enumerate(others)]
        return alts[:k]

    def chat_logprobs(self, toks, top):
        return {"content": [{"token": t, "logprob": -0.5, "bytes": list(t.encode()),
                             "top_logprobs": [{"token": a, "logprob": lp,
                                               "bytes": list(a.encode())}
                                              for a, lp in self.alternatives(t, top)]}
                            for _, t in toks], "refusal": None}

    def completion_logprobs(self, toks, k):
        offsets, pos = [], 0
        for _, t in toks:
            offsets.append(pos)
            pos += len(t)
        return {"tokens": [t for _, t in toks], "token_logprobs": [-0.5] * len(toks),
                "top_logprobs": [dict(self.alternatives(t, k or 0)) for _, t in toks],
                "text_offset": offsets}

    def stream_error(self, message, code=500):
        # vLLM reports a failure mid-stream as an error object in a data event
        return sse_event(self.sse, {"error": {"message": message, "type": "server_error",
                                              "param": None, "code": code}})


class TransformersServe(Flavor):
    """`transformers serve`: FastAPI app, chat completions only."""

    name = "transformers-serve"
    strip_stop = False     # stop strings reach the client with the text

    def routes(self):
        return {
            ("GET", "/health"): ("health", self.health),
            ("GET", "/v1/models"): ("health", self.models),
            ("POST", "/v1/chat/completions"): ("gen", self.chat),
        }

    def prefix_routes(self):
        return {}

    def health(self, req):
        raise Reply(200, {"status": "ok"})

    def model_object(self, mid):
        return {"id": mid, "object": "model", "created": CREATED, "owned_by": "transformers"}

    def resolve_model(self, body):
        # models load on demand: any name is served
        mid = body.get("model")
        return mid if isinstance(mid, str) and mid else self.s.model_ids[0]

    def chat(self, req):
        body = self.body(req)
        # QUIRK: the request's keys are checked against a fixed set and the
        # rest rejected via FastAPI's HTTPException, whose body is
        # {"detail": <string>}; the string shows a Python set.
        unexpected = set(body) - TRANSFORMERS_CHAT_KEYS
        if unexpected:
            raise Reply(422, {"detail": f"Unexpected keys in the request: {unexpected}"})
        job = super().chat(req)
        if job.stream:
            job.events = self.strip_nulls(job.events)
            job.end = []     # QUIRK: the stream just ends, no "data: [DONE]"
        return job

    def strip_nulls(self, events):
        # Chunks are pydantic models dumped with exclude_none=True, so null
        # fields (logprobs, finish_reason, usage) are absent rather than null.
        def clean(obj):
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if v is not None}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            return obj

        def run(gen):
            for ev in events(gen):
                data = json.loads(ev[len(self.sse):])
                if data.get("choices") and data["choices"][0].get("delta") == {
                        "role": "assistant", "content": ""}:
                    data["choices"][0]["delta"] = {"role": "assistant"}
                yield sse_event(self.sse, clean(data))
        return run

    def fault_error(self, code, message, etype=None):
        return Reply(code, {"detail": message or f"standin fault: status {code}"})

    def auth_error(self, given):
        return Reply(401, {"detail": "Unauthorized"})

    def stream_error(self, message, code=500):
        return sse_event(self.sse, {"error": message})


class Tgi(Flavor):
    """text-generation-inference 2.x router."""

    name = "tgi"
    sse = b"data:"           # axum's Event::json_data writes "data:" + JSON
    strip_stop = False       # TGI keeps the stop sequence in generated_text

    TYPES = {400: "validation", 422: "validation", 424: "generation",
             429: "overloaded", 500: "incomplete_generation", 503: "unhealthy"}

    def tgi_error(self, code, message, etype=None):
        return Reply(code, {"error": message, "error_type": etype or self.TYPES.get(code, "generation")})

    def error(self, code, message, etype=None, param=None, ecode=None):
        # request problems found by the Messages API are validation errors (422)
        return self.tgi_error(422 if code == 400 else code, message,
                              etype if etype in self.TYPES.values() else None)

    def fault_error(self, code, message, etype=None):
        return self.tgi_error(code, message or f"standin fault: status {code}", etype)

    def not_found(self):
        return Reply(404, b"", ctype="text/plain")    # axum's fallback: empty 404

    def auth_error(self, given):
        return Reply(401, b"Unauthorized", ctype="text/plain")

    def routes(self):
        return {
            ("GET", "/health"): ("health", self.health),
            ("GET", "/info"): ("health", self.info),
            ("GET", "/v1/models"): ("health", self.models),
            ("POST", "/generate"): ("gen", lambda r: self.generate(r, False)),
            ("POST", "/generate_stream"): ("gen", lambda r: self.generate(r, True)),
            ("POST", "/"): ("gen", self.compat),
            ("POST", "/v1/chat/completions"): ("gen", self.chat),
            ("POST", "/v1/completions"): ("gen", self.completions),
        }

    def prefix_routes(self):
        return {}

    def health(self, req):
        raise Reply(200, b"", ctype="text/plain")

    def info(self, req):
        raise Reply(200, {
            "model_id": self.s.model_ids[0], "model_sha": None,
            "model_dtype": "torch.float16", "model_device_type": "cuda",
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128, "max_best_of": 2,
            "max_stop_sequences": TGI_MAX_STOP, "max_input_tokens": TGI_MAX_INPUT,
            "max_total_tokens": TGI_MAX_TOTAL, "validation_workers": 2,
            "max_client_batch_size": 4, "router": "text-generation-router",
            "version": TGI_VERSION, "sha": None, "docker_label": None})

    def model_object(self, mid):
        return {"id": mid, "object": "model", "created": CREATED, "owned_by": mid}

    def models(self, req):
        raise Reply(200, {"object": "list", "data": [self.model_object(self.s.model_ids[0])]})

    def body(self, req):
        if not isinstance(req.json, dict):
            # axum's Json extractor: syntax errors are 400, shape errors 422
            if req.json is None:
                raise self.tgi_error(400, "Failed to parse the request body as JSON")
            raise self.tgi_error(422, "Failed to deserialize the JSON body into the target type")
        return req.json

    # --- native API
    def compat(self, req):
        body = self.body(req)
        return self.generate(req, bool(body.get("stream")))

    def validate(self, inputs, params):
        """TGI's validation.rs: returns the error message, or None."""
        mnt = params.get("max_new_tokens", TGI_DEFAULT_MAX_NEW)
        if mnt is None:
            mnt = TGI_DEFAULT_MAX_NEW
        temp = params.get("temperature")
        top_p = params.get("top_p")
        stop = params.get("stop") or []
        for v in (temp, top_p):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                return "parameters: invalid type, expected a number"
        if temp is not None and temp <= 0:
            # /generate rejects temperature <= 0 whatever do_sample says; only
            # the Messages API maps temperature 0 to greedy.
            return "`temperature` must be strictly positive"
        if top_p is not None and not 0 < top_p < 1:
            return "`top_p` must be > 0.0 and < 1.0"
        if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt < 1:
            return "`max_new_tokens` must be strictly positive"
        if len(stop) > TGI_MAX_STOP:
            return f"`stop` supports up to {TGI_MAX_STOP} stop sequences. Given: {len(stop)}"
        if not inputs.strip():
            return "`inputs` cannot be empty"
        ntok = word_count(inputs)
        if ntok > TGI_MAX_INPUT:
            return f"`inputs` must have less than {TGI_MAX_INPUT} tokens. Given: {ntok}"
        if ntok + mnt > TGI_MAX_TOTAL:
            return (f"`inputs` tokens + `max_new_tokens` must be <= {TGI_MAX_TOTAL}. "
                    f"Given: {ntok} `inputs` tokens and {mnt} `max_new_tokens`")
        return None

    def generate(self, req, stream):
        body = self.body(req)
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            what = "missing field `inputs`" if inputs is None else "inputs: invalid type, expected a string"
            raise self.tgi_error(422, "Failed to deserialize the JSON body into the target type: " + what)
        params = body.get("parameters") or {}
        if not isinstance(params, dict) or not isinstance(params.get("stop", []), list):
            raise self.tgi_error(422, "Failed to deserialize the JSON body into the target type: parameters")
        problem = self.validate(inputs, params)
        if problem:
            msg = "Input validation error: " + problem
            if stream:
                # QUIRK: /generate_stream validates inside the SSE stream, so the
                # status is already 200 and the error comes as one event.
                raise Reply(200, sse_event(self.sse, {"error": msg, "error_type": "validation"}),
                            ctype="text/event-stream")
            raise self.tgi_error(422, msg)
        budget = params.get("max_new_tokens") or TGI_DEFAULT_MAX_NEW
        stops, seed = params.get("stop") or [], params.get("seed")
        details = bool(params.get("details"))
        prefix = inputs if params.get("return_full_text") else ""
        ntok = word_count(inputs)

        def make_gen(b=None):
            return generate(inputs, budget if b is None else b, stops)

        def token(tid, text):
            return {"id": tid, "text": text, "logprob": -0.5, "special": False}

        def whole(gen):
            out = {"generated_text": prefix + gen.text}
            if details:
                out["details"] = {"finish_reason": TGI_FINISH[gen.finish],
                                  "generated_tokens": len(gen.tokens), "seed": seed,
                                  "prefill": [], "tokens": [token(*t) for t in gen.tokens]}
            return out

        def events(gen):
            last = len(gen.tokens) - 1
            for i, (tid, text) in enumerate(gen.tokens):
                ev = {"index": i + 1, "token": token(tid, text),
                      "generated_text": None, "details": None}
                if i == last:
                    ev["generated_text"] = prefix + gen.text
                    # StreamDetails only when parameters.details is true
                    if details:
                        ev["details"] = {"finish_reason": TGI_FINISH[gen.finish],
                                         "generated_tokens": len(gen.tokens), "seed": seed,
                                         "input_length": ntok}
                yield sse_event(self.sse, ev)

        return Job(stream, make_gen, whole, events, self.sse, self.stream_error)

    def stream_error(self, message, code=424):
        return sse_event(self.sse, {"error": message, "error_type": self.TYPES.get(code, "generation")})

    # --- Messages API
    def check_adapter(self, body, stream):
        mid = body.get("model")
        if mid in (None, "", "tgi", self.s.model_ids[0]):
            return
        # QUIRK: any other "model" is taken as a LoRA adapter id; the shard
        # fails to load it and the request fails as a generation error.
        msg = f"Request failed during generation: Server error: adapter not found: {mid}"
        if stream:
            raise Reply(200, self.chat_stream_error(msg, ADAPTER_ERROR_STATUS),
                        ctype="text/event-stream")
        raise self.tgi_error(ADAPTER_ERROR_STATUS, msg, "generation")

    def chat_stream_error(self, message, status):
        # TGI >= 2.4 sends errors in OpenAI-style streams as an error object
        return sse_event(self.sse, {"error": {"message": message, "http_status_code": status}})

    def chat(self, req):
        body = self.body(req)
        if not isinstance(body.get("messages"), list):
            raise self.tgi_error(422, "Failed to deserialize the JSON body into the "
                                 "target type: missing field `messages`")
        self.check_adapter(body, bool(body.get("stream")))
        return super().chat(req)

    def chat_job(self, body, model, prompt, ptok, budget, stops, n):
        # TGI's chat shapes: id "", a system_fingerprint, "n" ignored (one
        # choice), every chunk's delta carries role and content, and the last
        # token's chunk carries the finish reason.
        created, fp = int(time.time()), f"{TGI_VERSION}-native"
        want_lp = bool(body.get("logprobs"))
        top = body.get("top_logprobs") or 0
        usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))

        def make_gen(b=None):
            return generate(prompt, budget if b is None else b, stops)

        def whole(gen):
            return {"object": "chat.completion", "id": "", "created": created,
                    "model": model, "system_fingerprint": fp,
                    "choices": [{"index": 0,
                                 "message": {"role": "assistant", "content": gen.text},
                                 "logprobs": self.chat_logprobs(gen.tokens, top)
                                 if want_lp else None,
                                 "finish_reason": TGI_CHAT_FINISH[gen.finish]}],
                    "usage": self.usage(ptok, len(gen.tokens))}

        def chunk(choices, usage=None):
            return {"object": "chat.completion.chunk", "id": "", "created": created,
                    "model": model, "system_fingerprint": fp, "choices": choices,
                    "usage": usage}

        def events(gen):
            last = len(gen.tokens) - 1
            for i, tok in enumerate(gen.tokens):
                yield sse_event(self.sse, chunk([{
                    "index": 0, "delta": {"role": "assistant", "content": tok[1]},
                    "logprobs": self.chat_logprobs([tok], top) if want_lp else None,
                    "finish_reason": TGI_CHAT_FINISH[gen.finish] if i == last else None}]))
            if usage_chunk:
                yield sse_event(self.sse, chunk([], self.usage(ptok, len(gen.tokens))))

        job = Job(bool(body.get("stream")), make_gen, whole, events, self.sse,
                  lambda m, code=424: self.chat_stream_error(m, code))
        job.end = [self.sse + b"[DONE]\n\n"]      # axum writes "data:[DONE]"
        return job

    def completions(self, req):
        body = self.body(req)
        if not isinstance(body.get("prompt"), (str, list)):
            raise self.tgi_error(422, "Failed to deserialize the JSON body into the "
                                 "target type: missing field `prompt`")
        self.check_adapter(body, bool(body.get("stream")))
        job = super().completions(req)
        job.end = [self.sse + b"[DONE]\n\n"]
        job.error_event = lambda m, code=424: self.chat_stream_error(m, code)
        whole, events = job.whole, job.events
        fp = f"{TGI_VERSION}-native"

        def whole2(gen):
            out = whole(gen)
            out["id"], out["system_fingerprint"] = "", fp
            for c in out["choices"]:
                c["finish_reason"] = TGI_CHAT_FINISH[gen.finish]
            return out

        def events2(gen):
            for ev in events(gen):
                data = json.loads(ev[len(self.sse):])
                data["id"], data["system_fingerprint"] = "", fp
                for c in data.get("choices", []):
                    if c.get("finish_reason"):
                        c["finish_reason"] = TGI_CHAT_FINISH[gen.finish]
                yield sse_event(self.sse, data)

        job.whole, job.events = whole2, events2
        return job

    def n_choices(self, body):
        return 1          # TGI documents "n" as unused

    def resolve_model(self, body):
        return self.s.model_ids[0]


FLAVOR_CLASSES = {"tgi": Tgi, "openai": Flavor, "transformers-serve": TransformersServe}


# -------------------------------------------------------------------- server

class _Request:
    def __init__(self, method, path, headers, body, header_list=()):
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.header_list = list(header_list)   # [(name, value)] as received, repeats kept
        self.json = None
        if body:
            try:
                self.json = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                self.json = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, standin):
        self.standin = standin
        self.stopping = threading.Event()
        self.reset_conns = set()     # connections to end with RST, not FIN
        self.reset_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def shutdown_request(self, request):
        with self.reset_lock:
            reset = request in self.reset_conns
            self.reset_conns.discard(request)
        if reset:
            self.close_request(request)    # SO_LINGER 0: close sends RST
        else:
            super().shutdown_request(request)

    def server_bind(self):
        # HTTPServer.server_bind would look the host name up (getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass    # quiet: clients vanishing is what these tests are about


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = MAX_WAIT            # idle keep-alive and slow clients are bounded
    server_version = "standin"
    sys_version = ""

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.standin._track(self.connection, True)

    def finish(self):
        self.server.standin._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    # every method goes through one dispatcher
    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # --- raw writing
    def _write(self, data):
        self.wfile.write(data)

    def _head(self, code, headers):
        lines = [f"HTTP/1.1 {code} {REASONS.get(code, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _reply(self, code, body, ctype="application/json", headers=()):
        if not isinstance(body, (bytes, bytearray)):
            body = dumps(body).encode()
        hdrs = [("Content-Type", ctype), ("Content-Length", str(len(body)))] + list(headers)
        self._write(self._head(code, hdrs) + (b"" if self.command == "HEAD" else body))

    def _chunked(self):
        return self.request_version == "HTTP/1.1"

    def _stream_head(self, ctype="text/event-stream", extra=()):
        hdrs = [("Content-Type", ctype), ("Cache-Control", "no-cache")] + list(extra)
        if self._chunked():
            hdrs.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True   # HTTP/1.0: the body ends at close
        self._write(self._head(200, hdrs))

    def _chunk(self, data):
        if not data:
            return
        self._write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked() else data)

    def _stream_end(self):
        if self._chunked():
            self._write(b"0\r\n\r\n")

    def _sleep(self, seconds):
        """Sleeps; False when the stand-in is stopping."""
        return not self.server.stopping.wait(min(max(seconds, 0.0), MAX_WAIT))

    def _reset_on_close(self):
        """Makes the coming close a reset (RST) instead of an orderly FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self.server.reset_lock:
            self.server.reset_conns.add(self.connection)

    # --- reading
    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    # --- dispatch
    def _dispatch(self):
        s = self.server.standin
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        if self.request_version != "HTTP/1.1":
            self.close_connection = True
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/_control", "/_requests"):
                return self._control(path, body)
            req = _Request(self.command, self.path,
                           {k.lower(): v for k, v in self.headers.items()}, body,
                           self.headers.items())
            s._record(req)
            self._serve(s, req, path)
        except OSError:
            self.close_connection = True     # the client went away
        except Exception:                    # a bug in the stand-in: say so
            self.close_connection = True
            sys.stderr.write("standin: error serving %s %s\n%s" % (
                self.command, self.path, traceback.format_exc()))
            try:
                self._reply(500, {"error": "standin internal error", "error_type": "standin"})
            except OSError:
                pass

    def _route(self, flavor, method, path):
        routes = flavor.route_table
        if (method, path) in routes:
            return routes[(method, path)]
        for (m, prefix), r in flavor.prefix_routes().items():
            if m == method and path.startswith(prefix) and len(path) > len(prefix):
                return r
        if any(p == path for (_, p) in routes):
            return ("other", None)      # known path, wrong method
        return (None, None)

    def _serve(self, s, req, path):
        flavor = s._flavor
        kind, fn = self._route(flavor, self.command, path)
        fault = s._take_fault(kind)
        mode, p = fault
        if mode == "close":
            if p.get("reset"):
                self._reset_on_close()
            self.close_connection = True
            return
        if mode == "hang":
            self._hang(p.get("seconds", MAX_WAIT))
            return
        if mode == "delay" and not self._sleep(p.get("seconds", 1.0)):
            self.close_connection = True
            return
        if mode == "body":
            return self._send_given(p)
        try:
            if mode == "status":
                hdrs = [("Retry-After", str(p["retry_after"]))] if "retry_after" in p else []
                hdrs += [(k, v) for k, v in p.get("headers", ())]       # extra answer headers
                r = flavor.fault_error(p.get("code", 503), p.get("message"), p.get("error_type"))
                r.headers += hdrs
                raise r
            if kind is None:
                raise flavor.not_found()
            if kind == "other":
                raise Reply(405, b"", ctype="text/plain")
            if s.api_key is not None and (kind == "gen" or path.startswith("/v1/")):
                given = req.headers.get("authorization")
                if given != f"Bearer {s.api_key}":
                    raise flavor.auth_error(given)
            job = fn(req)
        except Reply as r:
            if r.ctype == "text/event-stream" and mode == "ok":
                # an error told inside an already started SSE stream
                self._stream_head()
                self._chunk(r.body)
                return self._stream_end()
            return self._send_whole(r.code, r.body, r.ctype, r.headers, fault)
        if job.stream:
            self._send_stream(job, fault)
        else:
            self._send_job_whole(job, fault)

    # --- answering, with the fault applied
    def _send_job_whole(self, job, fault):
        mode, p = fault
        if mode == "error_event":
            # not streaming: the failure is an ordinary error answer
            code = 424 if self.server.standin.flavor == "tgi" else 500
            r = self.server.standin._flavor.fault_error(
                code, p.get("message", "standin fault: generation failed"))
            return self._reply(r.code, r.body, r.ctype)
        if mode == "huge":
            size = int(p.get("size", 64 << 20))
            doc = dumps(job.whole(Generation([(100, HUGE_MARKER)], "length")))
            head, tail = doc.split(HUGE_MARKER, 1)
            return self._send_huge(head.encode(), size, tail.encode())
        self._send_whole(200, dumps(job.whole(job.make_gen())).encode(),
                         "application/json", [], fault)

    def _send_given(self, p):
        """Mode "body": `events` (data payloads, str or JSON) as an event
        stream, else `body` (str or JSON) whole; `code`, extra `headers`."""
        hdrs = [tuple(h) for h in p.get("headers", ())]
        if "events" not in p:
            body = p.get("body", {})
            body = body.encode() if isinstance(body, str) else body
            return self._reply(int(p.get("code", 200)), body, p.get("ctype", "application/json"), hdrs)
        self._stream_head(extra=hdrs)
        for ev in p["events"]:
            self._chunk(sse_event(self.server.standin._flavor.sse, ev))
        self._stream_end()

    def _send_huge(self, head, size, tail):
        self._write(self._head(200, [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(head) + size + len(tail)))]))
        self._write(head)
        piece = b"x" * (1 << 20)
        left = size
        while left > 0:
            self._write(piece[:min(left, len(piece))])
            left -= len(piece)
        self._write(tail)

    def _send_whole(self, code, body, ctype, headers, fault):
        mode, p = fault
        if not isinstance(body, (bytes, bytearray)):
            body = dumps(body).encode()
        if mode == "malformed":
            return self._reply(200, b'{"generated_text": "unterminated', "application/json")
        if mode == "drop":
            # promise more than is sent, send part of it, then hang up
            self._write(self._head(code, [("Content-Type", ctype),
                                          ("Content-Length", str(len(body) + 1024))]))
            self._write(body[:len(body) // 2])
            return self._drop(p)
        if mode == "comments":
            # alive but saying nothing: a whitespace byte (legal before JSON)
            # every `seconds` for `for` seconds, then the answer
            every = max(0.01, float(p.get("seconds", 0.2)))
            pad = max(0, int(min(float(p.get("for", MAX_WAIT)), MAX_WAIT) / every))
            self._write(self._head(code, [("Content-Type", ctype),
                                          ("Content-Length", str(pad + len(body)))] + list(headers)))
            for _ in range(pad):
                if not self._sleep(every):
                    return self._drop(p)
                self._write(b" ")
            self._write(body)
            return
        if mode == "trickle":
            pieces = max(1, int(p.get("pieces", 4)))
            step = max(1, -(-len(body) // pieces))
            self._write(self._head(code, [("Content-Type", ctype),
                                          ("Content-Length", str(len(body)))] + list(headers)))
            for i in range(0, len(body), step):
                if not self._sleep(p.get("seconds", 0.3)):
                    return self._drop(p)
                self._write(body[i:i + step])
            return
        self._reply(code, body, ctype, headers)

    def _send_stream(self, job, fault):
        mode, p = fault
        if mode == "huge":
            return self._send_huge_stream(job, int(p.get("count", 100000)))
        gen = job.make_gen()
        self._stream_head()
        after = int(p.get("after", 2))
        events = itertools.chain(job.events(gen), job.end)
        if mode in ("drop", "error_event"):
            events = itertools.islice(job.events(gen), after)
        if mode == "comments":
            # `after` events (default none), then only keep-alive comments --
            # ":" lines, as axum's KeepAlive sends -- every `seconds` for `for`
            # seconds, then the rest of the stream
            events = list(itertools.chain(job.events(gen), job.end))
            first, rest = events[:int(p.get("after", 0))], events[int(p.get("after", 0)):]
            for ev in first:
                self._chunk(ev)
            every = max(0.01, float(p.get("seconds", 0.2)))
            deadline = time.monotonic() + min(float(p.get("for", MAX_WAIT)), MAX_WAIT)
            while time.monotonic() < deadline:
                if not self._sleep(every):
                    return self._drop(p)
                self._chunk(b":\n\n")
            events = rest
        for i, ev in enumerate(events):
            if mode == "malformed" and i == 2:
                self._chunk(job.sse + b'{"index":3,"token":{"id":\n\n')
            if mode == "trickle" and not self._sleep(p.get("seconds", 0.3)):
                return self._drop(p)
            self._chunk(ev)
        if mode == "drop":
            return self._drop(p)       # no terminating chunk
        if mode == "error_event":
            # the real servers' way of failing mid-stream: an error event,
            # then the stream's normal end
            self._chunk(job.error_event(p.get("message", "standin fault: generation failed")))
            for ev in job.end:
                self._chunk(ev)
        self._stream_end()

    def _send_huge_stream(self, job, count):
        self._stream_head()
        buf = []
        size = 0
        for ev in itertools.chain(job.events(job.make_gen(count)), job.end):
            buf.append(ev)
            size += len(ev)
            if size >= 1 << 16:
                self._chunk(b"".join(buf))
                buf, size = [], 0
        self._chunk(b"".join(buf))
        self._stream_end()

    def _drop(self, p):
        """Hang up mid-body: no terminating chunk (RST with reset=True)."""
        self.wfile.flush()
        if p.get("reset"):
            self._reset_on_close()
        self.close_connection = True

    def _hang(self, seconds):
        """Answer nothing until the client closes, the stand-in stops or
        `seconds` (60 at most) pass; then close."""
        self.close_connection = True
        deadline = time.monotonic() + min(float(seconds), MAX_WAIT)
        sock = self.connection
        while not self.server.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                ready, _, _ = select.select([sock], [], [], min(left, 0.1))
                if ready and not sock.recv(4096, socket.MSG_PEEK):
                    return               # client closed
                if ready:
                    time.sleep(min(left, 0.1))   # pipelined bytes: keep ignoring
            except (OSError, ValueError):
                return

    # --- control endpoint
    def _control(self, path, body):
        s = self.server.standin
        if path == "/_requests" and self.command == "GET":
            recs = [{k: v for k, v in r.items() if k != "body"} for r in s.requests]
            return self._reply(200, recs)
        if path == "/_requests" and self.command == "DELETE":
            s.clear_requests()
            return self._reply(200, {"ok": True})
        if path == "/_control" and self.command == "POST":
            try:
                args = json.loads(body or b"{}")
                mode = args.pop("mode")
                s.set_fault(mode, **args)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                return self._reply(400, {"error": f"bad control request: {e}"})
            return self._reply(200, {"ok": True, "mode": mode})
        return self._reply(405, {"error": "method not allowed"})


class Standin:
    """A stand-in upstream server of one flavor; see the module docstring."""

    def __init__(self, flavor, model_ids=None, port=0, api_key=None):
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; one of {FLAVORS}")
        self.flavor = flavor
        self.model_ids = list(model_ids or ["gpt2"])
        self.port = port
        self.api_key = api_key
        self._flavor = FLAVOR_CLASSES[flavor](self)
        self._lock = threading.Lock()
        self._requests = []
        self._conns = set()
        self._fault = ("ok", {})
        self._fault_left = None
        self._server = None
        self._thread = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle
    def start(self):
        if self._server is not None:
            return self
        deadline = time.monotonic() + 5
        while True:
            try:
                self._server = _Server(("127.0.0.1", self.port), self)
                break
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"standin-{self.flavor}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _track(self, conn, alive):
        with self._lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # --- faults
    def set_fault(self, mode, **params):
        """Applies to following requests on generation routes (and health,
        /info, /v1/models with health=True); mode "ok" clears. `times`
        (default forever) ends the fault after that many faulted requests."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {FAULT_MODES}")
        times = params.pop("times", None)
        with self._lock:
            self._fault = (mode, dict(params))
            self._fault_left = None if times is None else int(times)
            if self._fault_left is not None and self._fault_left <= 0:
                self._fault, self._fault_left = ("ok", {}), None

    def _take_fault(self, kind):
        with self._lock:
            mode, params = self._fault
            if mode == "ok" or kind is None or kind == "other":
                return ("ok", {})
            if kind == "health" and not params.get("health"):
                return ("ok", {})
            if self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left <= 0:
                    self._fault, self._fault_left = ("ok", {}), None
            return (mode, params)

    # --- requests seen
    def _record(self, req):
        with self._lock:
            self._requests.append({"method": req.method, "path": req.path, "at": time.monotonic(),
                                   "headers": req.headers, "header_list": req.header_list,
                                   "json": req.json,
                                   "body": req.body})

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def clear_requests(self):
        with self._lock:
            self._requests.clear()

    def count(self, path=None):
        return sum(1 for r in self.requests
                   if path is None or r["path"] == path or r["path"].split("?", 1)[0] == path)

    def wait_count(self, n, path=None, timeout=10.0):
        """True once at least n requests (to path) have arrived."""
        deadline = time.monotonic() + min(timeout, MAX_WAIT)
        while self.count(path) < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def main(argv=None):
    ap = argparse.ArgumentParser(description="Stand-in upstream model server.")
    ap.add_argument("--flavor", choices=FLAVORS, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model-id", action="append", dest="model_ids")
    ap.add_argument("--api-key")
    args = ap.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    s = Standin(args.flavor, args.model_ids, args.port, api_key=args.api_key).start()
    sys.stdout.write(f"READY {s.port}\n")
    sys.stdout.flush()
    while not done.wait(1.0):
        pass
    s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
