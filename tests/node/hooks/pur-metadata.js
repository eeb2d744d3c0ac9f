/**
 * pre-user-registration: set user_metadata / app_metadata on the new user.
 */
module.exports = function (user, context, cb) {
  var response = {};
  response.user = {
    user_metadata: { favorite_color: 'blue', signup_language: context.renderLanguage || null },
    app_metadata: { plan: 'free', vip: false, source_connection: context.connection.name }
  };
  cb(null, response);
};
