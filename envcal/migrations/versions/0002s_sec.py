"""security and data integrity: bounded dead letters, keyed audit rows, ingest conflicts

Revision ID: 0002s
Revises: 0001
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import envcal.db

revision: str = '0002s'
down_revision: str | None = '0002g'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('payload_sha256', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_dead_letter_payload_sha256'), ['payload_sha256'],
                              unique=False)
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('row_digest', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('mac', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.create_table('ingest_conflict',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('detected_at', envcal.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('analyzer_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('conflict_key', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('stored', sa.JSON(), nullable=True),
    sa.Column('received', sa.JSON(), nullable=True),
    sa.Column('received_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('resolution', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('resolved_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('resolved_at', envcal.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'analyzer_id', 'conflict_key', 'received_sha256',
                        name='uq_ingest_conflict')
    )
    with op.batch_alter_table('ingest_conflict', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingest_conflict_detected_at'), ['detected_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ingest_conflict_analyzer_id'), ['analyzer_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ingest_conflict', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_conflict_analyzer_id'))
        batch_op.drop_index(batch_op.f('ix_ingest_conflict_detected_at'))
    op.drop_table('ingest_conflict')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('mac')
        batch_op.drop_column('row_digest')
    with op.batch_alter_table('dead_letter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letter_payload_sha256'))
        batch_op.drop_column('payload_sha256')
        batch_op.drop_column('payload_size')
