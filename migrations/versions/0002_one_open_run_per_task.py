"""one open run per task; requeued runs point at the run they replace

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:00:23.514941

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requeued_from', sa.Integer(), nullable=True))
        batch_op.create_index('uq_training_runs_one_open', ['task_id'], unique=True, sqlite_where=sa.text("status IN ('queued', 'running')"), postgresql_where=sa.text("status IN ('queued', 'running')"))
        batch_op.create_foreign_key('fk_training_runs_requeued_from', 'training_runs', ['requeued_from'], ['id'])



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_training_runs_requeued_from', type_='foreignkey')
        batch_op.drop_index('uq_training_runs_one_open', sqlite_where=sa.text("status IN ('queued', 'running')"), postgresql_where=sa.text("status IN ('queued', 'running')"))
        batch_op.drop_column('requeued_from')

