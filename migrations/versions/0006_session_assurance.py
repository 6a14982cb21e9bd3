"""sessions.amr, aal, auth_time: how a session's user proved who they are (DESIGN §10)

Every access token carries them and a refresh keeps them. Sessions made before this revision
were all password logins: amr ["pwd"], aal1, auth_time = created_at.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 17:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('amr', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('aal', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('auth_time', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE sessions SET amr = '[\"pwd\"]', aal = 'aal1', auth_time = created_at")
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.alter_column('amr', existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column('aal', existing_type=sa.String(length=8), nullable=False)
        batch_op.alter_column('auth_time', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('auth_time')
        batch_op.drop_column('aal')
        batch_op.drop_column('amr')
