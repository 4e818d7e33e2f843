"""Alembic environment: the URL comes from the caller's config or MIA_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from chat_service.store import Base as AssistantBase
from tasks.settings import Settings
from web.fleet.db import Base, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
target_metadata = [Base.metadata, AssistantBase.metadata]

if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
