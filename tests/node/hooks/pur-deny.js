/**
 * pre-user-registration: deny the signup. PreUserRegistrationError is a global the
 * user-registration compiler injects; the 2nd argument is shown to the user.
 */
module.exports = function (user, context, cb) {
  return cb(new PreUserRegistrationError('Denied user registration in Pre User Registration Hook: ' + user.email,
    'You are not allowed to sign up.'));
};
