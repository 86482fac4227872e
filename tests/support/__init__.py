"""Test helpers shared by unit and workflow tests (importable as ``tests.support``).

- :mod:`tests.support.openai_server`: a loopback OpenAI-compatible HTTP server with fault injection, and the
  pytest fixtures ``openai_server`` / ``openai_server_factory`` (import them into a test module or conftest).
"""

from .openai_server import FAULT_KINDS, FINAL_FAULT_KINDS, OpenAIServer, default_reply, last_user_message

__all__ = ["FAULT_KINDS", "FINAL_FAULT_KINDS", "OpenAIServer", "default_reply", "last_user_message"]
