"""workers record a heartbeat every poll, so /metrics and the console can say whether any
worker is alive (an alert fires when none is)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 12:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'worker_beats',
        sa.Column('worker_id', sa.String(length=128), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('worker_id'),
    )
    op.create_index('ix_worker_beats_seen_at', 'worker_beats', ['seen_at'])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_worker_beats_seen_at', table_name='worker_beats')
    op.drop_table('worker_beats')
