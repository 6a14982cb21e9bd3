"""signing_keys.hmac_key_encrypted: the HMAC secret that signs refresh tokens

Refresh tokens are HS256 with a secret only authsvc holds (DESIGN §3, 2026-12), one per key row,
rotated with it. Rows made before this migration get theirs from the first process that loads
them (the secret needs AUTHSVC_SECRET_KEY to be encrypted, which migrations do not have).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 04:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hmac_key_encrypted', sa.LargeBinary(), nullable=True))


def downgrade():
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.drop_column('hmac_key_encrypted')
