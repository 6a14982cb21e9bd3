"""audit events (DESIGN §11): one row per security event and admin action

Written in the transaction of the action it records. user_id and actor_id carry no foreign
key: a deleted user's rows stay (the id only; the address is erased), until they are pruned
after AUTHSVC_AUDIT_RETENTION_DAYS. The indexes serve the admin listing, newest first, by
user and by type, and pruning by age.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audit_events',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=48), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('actor_id', sa.String(length=80), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_at_id', ['at', 'id'], unique=False)
        batch_op.create_index('ix_audit_events_user_at', ['user_id', 'at', 'id'], unique=False)
        batch_op.create_index('ix_audit_events_type_at', ['type', 'at', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_type_at')
        batch_op.drop_index('ix_audit_events_user_at')
        batch_op.drop_index('ix_audit_events_at_id')
    op.drop_table('audit_events')
