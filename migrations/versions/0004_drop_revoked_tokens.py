"""drop revoked_tokens: the session row alone decides revocation

DESIGN §3 (2026-12): every denylisted jti belonged to a session already revoked in the
database, so the denylist was a second, redundant read. The table held the denylist only
without REDIS_URL (the embedded single-process default); with Redis it was never written, so a
rolling upgrade of a Redis deployment has no old replica that still needs it. Its rows name
sessions that stay revoked, so nothing is lost.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 11:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('revoked_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revoked_tokens_expires_at'))
    op.drop_table('revoked_tokens')


def downgrade():
    op.create_table('revoked_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_revoked_tokens'))
    )
    with op.batch_alter_table('revoked_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revoked_tokens_expires_at'), ['expires_at'], unique=False)
