"""How list endpoints are paged (keyset: `limit` rows after a cursor); see app/db/pages.py."""

from app.db.pages import DEFAULT_PAGE, MAX_PAGE, Page

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Page"]
