"""users.password_version: bumped by every password change or reset

A login creates its session only while the version it read is still the user's (and the user is
active), so a login in flight with the old password gets nothing after a change commits; a
rehash under new parameters keeps the version, so concurrent logins of one user never fail
each other.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 03:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('password_version', sa.Integer(), server_default='0', nullable=False)
        )


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('password_version')
