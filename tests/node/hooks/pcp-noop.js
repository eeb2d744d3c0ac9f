/**
 * post-change-password: react to a password change, then cb().
 */
module.exports = function (user, context, cb) {
  // e.g. send a "your password was changed" e-mail to user.email
  cb();
};
