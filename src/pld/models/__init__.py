"""Model layer: protocols, backends, the registry of spec strings and the one client wrapper."""

from pld.models.base import (
    ChatModel,
    Completion,
    Embedder,
    GenOptions,
    Message,
    Usage,
)
from pld.models.client import Accountant, ChatClient, EmbedClient, Limits, Price
from pld.models.registry import parse_spec, resolve_chat, resolve_embedder

__all__ = [
    "Accountant",
    "ChatClient",
    "ChatModel",
    "Completion",
    "EmbedClient",
    "Embedder",
    "GenOptions",
    "Limits",
    "Message",
    "Price",
    "Usage",
    "parse_spec",
    "resolve_chat",
    "resolve_embedder",
]
