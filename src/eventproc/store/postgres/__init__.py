"""The PostgreSQL driver: asyncpg for the hot path, SQLAlchemy for the rest."""
