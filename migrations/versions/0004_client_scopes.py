"""client keys are scoped: the tasks a key may use (client_tasks) and what it may do there
(clients.scopes).  Keys made before this keep what they could do: every existing task and
every scope; tasks created later are not theirs unless granted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

EVERY_SCOPE = '["predict", "feedback", "read"]'


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scopes', sa.JSON(), nullable=True))
    op.execute(sa.text(f"UPDATE clients SET scopes = '{EVERY_SCOPE}'"))
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.alter_column('scopes', existing_type=sa.JSON(), nullable=False)
    op.create_table(
        'client_tasks',
        sa.Column('client_id', sa.Integer(), nullable=False),
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['clients.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('client_id', 'task_id'),
    )
    op.execute(sa.text("INSERT INTO client_tasks (client_id, task_id) SELECT clients.id, tasks.id FROM clients, tasks"))


def downgrade() -> None:
    """Downgrade schema (every key again reaches every task)."""
    op.drop_table('client_tasks')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('scopes')
