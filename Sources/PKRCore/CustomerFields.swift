/// The rules for what names a customer: its id, email, display name and provider account.
public enum CustomerFields {
    public static let emailBytesMax = 254
    public static let displayNameScalarsMax = 100
    public static let userIDRule = "a customer id (1 to 64 characters of A-Z a-z 0-9 -)"
    public static let emailRule = "an email address: 3 to 254 printable ASCII characters, no spaces, one @ with text on both sides"
    public static let displayNameRule = "1 to 100 characters, no control characters"

    public static func isUserID(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 64
            && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 }
    }

    public static func isEmail(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard (3...emailBytesMax).contains(bytes.count), bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return false }
        let at = bytes.indices.filter { bytes[$0] == UInt8(ascii: "@") }
        guard at.count == 1, let index = at.first else { return false }
        return index > 0 && index < bytes.count - 1
    }

    public static func isDisplayName(_ text: String) -> Bool {
        let scalars = text.unicodeScalars
        return !scalars.isEmpty && scalars.count <= displayNameScalarsMax
            && scalars.allSatisfy { $0.value >= 0x20 && !(0x7f...0x9f).contains($0.value) }
    }

    /// A provider account number: the same rule as a webhook's `account`.
    public static func isWalletAccount(_ text: String) -> Bool {
        WebhookEvent.isIdentifier(text, bytesMax: WebhookEvent.accountBytesMax)
    }
}
