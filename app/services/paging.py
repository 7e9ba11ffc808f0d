"""How list endpoints are paged (keyset: `limit` rows after a cursor); see app/db/paging.py."""

from app.db.paging import DEFAULT_PAGE, MAX_PAGE, Page

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Page"]
