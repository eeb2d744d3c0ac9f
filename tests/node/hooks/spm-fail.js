/**
 * send-phone-message: the provider failed. SendPhoneMessageError is a global the
 * send-phone-message compiler injects (message, friendlyMessage).
 */
module.exports = function (recipient, text, context, cb) {
  cb(new SendPhoneMessageError('provider returned 503 for ' + recipient, 'Could not send the code, try again later.'));
};
