"""The restaurant assistant and the prompts every front door builds (framework-free)."""

from chat_service.prompts import direct_messages

__all__ = ["direct_messages"]
