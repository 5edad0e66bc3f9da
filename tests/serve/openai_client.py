"""The official `openai` package against `moa serve` (tests/serve.rs runs this): models, a
non-streaming and a streaming completion with usage, and error statuses. Prints one JSON object."""
import json
import os
import sys

import openai

base = os.environ["MOA_BASE_URL"]
key = os.environ["MOA_KEY"]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
messages = [{"role": "user", "content": "What is a mixture of agents?"}]
out = {"errors": {}}

out["models"] = [m.id for m in client.models.list()]

plain = client.chat.completions.create(model="moa/mini", messages=messages)
extra = plain.model_extra or {}
out["plain"] = {
    "text": plain.choices[0].message.content,
    "usage": plain.usage.model_dump(),
    "moa_source": extra.get("moa", {}).get("final", {}).get("source"),
}

text, chunks, usage = "", 0, None
stream = client.chat.completions.create(
    model="moa/mini", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
        chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
out["streamed"] = {"text": text, "chunks": chunks, "usage": usage}


def error_of(call):
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        r = {"status": e.status_code, "code": body.get("code")}
        if body.get("param"):
            r["param"] = body.get("param")
        return r
    return None


out["errors"]["unknown_model"] = error_of(
    lambda: client.chat.completions.create(model="moa/nope", messages=messages)
)
out["errors"]["bad_key"] = error_of(
    lambda: openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
)
out["errors"]["bad_type"] = error_of(
    lambda: client.chat.completions.create(
        model="moa/mini", messages=messages, extra_body={"temperature": "hot"}
    )
)
json.dump(out, sys.stdout)
