"""answers of every kind: a feedback row may be about one span of a tagging answer, and
labels, corrections and predictions hold a tagging answer's spans (longer than 128 characters)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 04:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

WIDENED = (("feedback", "correction", True), ("examples", "label", False), ("predictions", "label", False))


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.add_column(sa.Column('span', sa.Integer(), nullable=True))
    for table, column, nullable in WIDENED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=128), type_=sa.Text(),
                                  existing_nullable=nullable)


def downgrade() -> None:
    """Downgrade schema (fails on PostgreSQL if a stored answer is longer than 128 characters)."""
    for table, column, nullable in WIDENED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.Text(), type_=sa.String(length=128),
                                  existing_nullable=nullable)
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_column('span')
