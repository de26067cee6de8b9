"""Merchant group chats: private groups, durable ordered messages, unread counts."""

from .service import GroupChats
from .settings import GroupSettings

__all__ = ["GroupChats", "GroupSettings"]
