"""each version records the inference engines prepared for it (ONNX Runtime files, their
sha256, parity against PyTorch fp32, measured speed) and which one serving should use

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (existing versions have no engines yet: the worker prepares them)."""
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('engines', sa.JSON(), nullable=True))
    op.execute(sa.text("UPDATE model_versions SET engines = '{}'"))
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.alter_column('engines', existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('engines')
