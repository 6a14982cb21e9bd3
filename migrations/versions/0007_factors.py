"""second factors (DESIGN §10): factors, recovery_codes, challenges

factors holds a user's TOTP secrets (encrypted, with the last accepted time step) and passkeys;
recovery_codes keeps only an HMAC of each code; challenges holds the mfa_token of a login
waiting for its second step and the WebAuthn ceremonies' challenges, by digest.
users.factor_version moves on with each factor added, so a password-only login that checked
the account before gets no session.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('factor_version', sa.Integer(), server_default=sa.text('0'), nullable=False))

    op.create_table('factors',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('secret_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('last_step', sa.BigInteger(), nullable=True),
    sa.Column('credential_id', sa.String(length=1400), nullable=True),
    sa.Column('public_key', sa.LargeBinary(), nullable=True),
    sa.Column('sign_count', sa.BigInteger(), nullable=True),
    sa.Column('transports', sa.JSON(), nullable=True),
    sa.Column('device_type', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_factors_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_factors')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_factors_credential_id'))
    )
    with op.batch_alter_table('factors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_factors_user_id'), ['user_id'], unique=False)

    op.create_table('recovery_codes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_recovery_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recovery_codes'))
    )
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recovery_codes_user_id'), ['user_id'], unique=False)

    op.create_table('challenges',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('password_version', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('spent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_challenges_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_challenges')),
    sa.UniqueConstraint('digest', name=op.f('uq_challenges_digest'))
    )
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenges_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_challenges_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenges_expires_at'))
        batch_op.drop_index(batch_op.f('ix_challenges_user_id'))
    op.drop_table('challenges')
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recovery_codes_user_id'))
    op.drop_table('recovery_codes')
    with op.batch_alter_table('factors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_factors_user_id'))
    op.drop_table('factors')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('factor_version')
