"""an erasure leaves a record (erasures) that every commit of the user's predictions and feedback
checks, so a request in flight on any API process cannot store rows after its user was erased

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 12:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'erasures',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('user_hash', sa.String(length=64), nullable=False),
        sa.Column('client_id', sa.Integer(), nullable=True),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_erasures_user_hash', 'erasures', ['user_hash'])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_erasures_user_hash', table_name='erasures')
    op.drop_table('erasures')
