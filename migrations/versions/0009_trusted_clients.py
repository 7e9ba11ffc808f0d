"""clients.trusted: an admin vouches for a key's feedback (an internal QA team), so the noise model
takes its votes as known truth when it estimates how often the other keys' ±1 are flipped

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('clients') as batch:
        batch.add_column(sa.Column('trusted', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('clients') as batch:
        batch.drop_column('trusted')
