/**
 * post-user-registration: do something with the new user, then cb().
 */
module.exports = function (user, context, cb) {
  // e.g. notify Slack about user.email
  cb();
};
