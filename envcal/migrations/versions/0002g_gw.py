"""dead_letter.peer: the TCP peer address of a gateway refusal

Revision ID: 0002g
Revises: 0002p
Create Date: 2026-12-03 13:55:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0002g'
down_revision: str | None = '0002p'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('peer', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.drop_column('peer')
