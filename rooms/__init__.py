"""Live rooms and merchant group chats."""
