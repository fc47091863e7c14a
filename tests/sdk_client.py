"""Drives nexus with the official `anthropic` Python SDK (run by tests/sdk.rs).

Reads the nexus base URL from NEXUS_BASE_URL, makes one non-streaming and one streaming
Messages call, and prints a single JSON line with the texts and usage figures it saw.
"""

import json
import os
import sys

import anthropic


def usage_of(message):
    usage = message.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
    }


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def tool_uses_of(message):
    return [{"name": block.name, "input": block.input} for block in message.content if block.type == "tool_use"]


def main():
    client = anthropic.Anthropic(
        base_url=os.environ["NEXUS_BASE_URL"],
        api_key="sk-ant-api03-test",
        max_retries=0,
        timeout=30.0,
    )
    request = dict(
        model="claude-sonnet-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": "Say hello through nexus."}],
    )

    created = client.messages.create(**request)

    with client.messages.stream(**request) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()

    print(
        json.dumps(
            {
                "sdk_version": anthropic.__version__,
                "create": {"text": text_of(created), "stop_reason": created.stop_reason, "usage": usage_of(created)},
                "stream": {
                    "text_stream": streamed_text,
                    "final_text": text_of(final),
                    "tool_uses": tool_uses_of(final),
                    "stop_reason": final.stop_reason,
                    "usage": usage_of(final),
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
