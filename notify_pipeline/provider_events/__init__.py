"""Provider event notifications (SES via SNS): verified, normalised to event rows, recorded."""
