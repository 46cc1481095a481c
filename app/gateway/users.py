"""Public users API: /v1/users (own profile; administration)."""

from flask import request
from flask.views import MethodView
from flask_jwt_extended import get_jwt_identity

from app.accounts import interface as accounts
from app.errors import ApiError
from app.extensions import ApiBlueprint
from app.gateway.account_schemas import (
    AdminUserPatchSchema,
    PasswordChangeSchema,
    ProfilePatchSchema,
    SessionSchema,
    UserSchema,
)
from app.gateway.auth import BEARER, admin_only, signed_in
from app.gateway.http import require_json_body

blp = ApiBlueprint("users", __name__, url_prefix="/v1/users", description="Profiles and user administration.")
blp.before_request(require_json_body)


@blp.route("/me")
class Me(MethodView):
    @signed_in
    @blp.response(200, UserSchema)
    @blp.doc(security=BEARER)
    def get(self):
        """Your profile"""
        return accounts.get_user(user_id=get_jwt_identity())

    @signed_in
    @blp.arguments(ProfilePatchSchema)
    @blp.response(200, UserSchema)
    @blp.doc(security=BEARER)
    def patch(self, changes):
        """Change your profile (roles and email cannot be changed here)"""
        return accounts.update_profile(user_id=get_jwt_identity(), **changes)


@blp.route("/me/password")
class MyPassword(MethodView):
    @signed_in
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, SessionSchema)
    @blp.problem_response(400, "`validation_error`: a field is missing, or the new password breaks the policy")
    @blp.problem_response(401, "`invalid_credentials` (`field`: `currentPassword`): the current password is wrong")
    @blp.problem_response(429, "`login_locked` after repeated wrong passwords, here or at the login (see Retry-After)")
    @blp.doc(security=BEARER)
    def post(self, body):
        """Change your password; every other session ends and a fresh one is returned

        Wrong current passwords count towards the login lockout of your account from your address.
        """
        return accounts.change_password(user_id=get_jwt_identity(), client_ip=request.remote_addr or "unknown", **body)


@blp.route("")
class Users(MethodView):
    @admin_only
    @blp.response(200, UserSchema(many=True))
    @blp.paginate(page_size=20, max_page_size=100)
    @blp.doc(security=BEARER)
    def get(self, pagination_parameters):
        """List users (admin)"""
        page = accounts.list_users(page=pagination_parameters.page, page_size=pagination_parameters.page_size)
        pagination_parameters.item_count = page.total
        return list(page.items)


@blp.route("/<string:user_id>")
class UserById(MethodView):
    @admin_only
    @blp.arguments(AdminUserPatchSchema)
    @blp.response(200, UserSchema)
    @blp.problem_response(404, "`user_not_found`")
    @blp.problem_response(409, "`own_admin_access`: an admin cannot deactivate themselves or drop their own admin role")
    @blp.doc(security=BEARER)
    def patch(self, changes, user_id):
        """Change a user's roles or active flag (admin); the user's sessions end"""
        if user_id == get_jwt_identity() and (
            changes.get("is_active") is False or "admin" not in changes.get("roles", ["admin"])
        ):
            raise ApiError(409, "own_admin_access", "Another admin must deactivate you or take away your admin role.")
        return accounts.update_user(user_id=user_id, **changes)
