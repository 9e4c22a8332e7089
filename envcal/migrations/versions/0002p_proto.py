"""HJ 212 frames: quirks and resend (RF=1) columns

Revision ID: 0002p
Revises: 0001
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0002p'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('hj212_frame', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quirks', sqlmodel.sql.sqltypes.AutoString(length=255),
                                      nullable=True))
        batch_op.add_column(sa.Column('resend', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('hj212_frame', schema=None) as batch_op:
        batch_op.drop_column('resend')
        batch_op.drop_column('quirks')
