"""an index on a version's predictions in time order: drift and the -1 shares read them on every
console page load and metrics scrape, which scanned and sorted the whole table before

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 13:40:00

"""
from typing import Sequence, Union

from alembic import op


revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index('ix_predictions_version_created', 'predictions', ['model_version_id', 'created_at', 'id'])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_predictions_version_created', table_name='predictions')
