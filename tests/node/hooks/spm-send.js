/**
 * send-phone-message: "send" the message with a custom provider and succeed.
 */
module.exports = function (recipient, text, context, cb) {
  // a real hook would call Twilio etc. here
  cb(null, { message_id: 'msg_' + context.code, recipient: recipient });
};
