import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PKRApplication
import PKRCore

/// The one place where failures become HTTP responses: a status and `{"error": code, "detail": text}`.
enum ErrorMapping {
    static func status(for error: GatewayError) -> HTTPResponse.Status {
        switch error {
        case .invalidJSON, .missingField, .invalidField, .invalidIdempotencyKey, .insufficientBalance, .disallowedHost:
            return .badRequest
        case .invalidAmount, .amountAboveLimit, .notMintable, .idempotencyKeyReused, .unknownAccount, .payoutNotConfirmed:
            return .unprocessableContent
        case .unknownProviderTransaction, .notFound, .unknownCustomer: return .notFound
        case .demoNotSeeded, .idempotencyRequestInFlight, .webhookConflict, .customerConflict: return .conflict
        case .csrfFailed, .forbidden: return .forbidden
        case .webhookRejected, .unauthorized: return .unauthorized
        case .payloadTooLarge: return .contentTooLarge
        case .rateLimited: return .tooManyRequests
        case .requestTimeout: return .requestTimeout
        case .providerUnavailable: return .badGateway
        case .storeUnavailable: return .serviceUnavailable
        }
    }

    static func body(for error: GatewayError) -> [(String, JSONValue)] {
        var fields: [(String, JSONValue)] = [("error", .string(error.code)), ("detail", .string(error.detail))]
        switch error {
        case .webhookConflict(let id, let differing):
            fields.append(("provider_tx_id", .string(id)))
            fields.append(("differing_fields", .array(differing.map(JSONValue.string))))
        case .insufficientBalance(let available, let requested):
            fields.append(("available_units", .string(String(available))))
            fields.append(("requested_units", .string(String(requested))))
        case .missingField(let field), .invalidField(let field, _), .invalidAmount(let field, _), .amountAboveLimit(let field, _):
            fields.append(("field", .string(field)))
        default:
            break
        }
        return fields
    }

    /// Maps anything thrown by a handler. Unknown errors are genuine server faults: logged, answered 500.
    static func response(for error: any Error, logger: Logger) -> Response {
        switch error {
        case let error as GatewayError:
            return JSONResponse.make(status(for: error), .object(body(for: error)))
        case let error as ProviderError:
            return response(for: providerFailure(error), logger: logger)
        case let error as MoneyError:
            return response(for: GatewayError.invalidAmount(field: "amount", error), logger: logger)
        case is NIOTooManyBytesError:
            return response(for: GatewayError.payloadTooLarge(bytesMax: 0), logger: logger)
        case let error as HTTPError where error.status == .notFound:
            return response(for: GatewayError.notFound("no such endpoint"), logger: logger)
        case let error as HTTPError where error.status == .methodNotAllowed:
            return JSONResponse.make(
                .methodNotAllowed,
                .object([
                    ("error", .string("method_not_allowed")),
                    ("detail", .string("this endpoint does not accept that method")),
                ]))
        case let error as HTTPError where error.status.code < 500:
            return JSONResponse.make(
                error.status,
                .object([
                    ("error", .string("bad_request")),
                    ("detail", .string(error.body ?? error.status.reasonPhrase)),
                ]))
        case let failure as any StoreFailure:
            // Only codes and the server's message: a bound value (a secret, a body) never reaches the log.
            switch failure.storeFailureKind {
            case .unavailable(let detail):
                logger.error("database unavailable", metadata: ["error": "\(failure.loggableDescription)"])
                return response(for: GatewayError.storeUnavailable(detail), logger: logger)
            case .contention:
                logger.warning("transaction gave up after retries", metadata: ["error": "\(failure.loggableDescription)"])
                return response(for: GatewayError.storeUnavailable("too much contention; retry"), logger: logger)
            case .fault:
                logger.error("database error", metadata: ["error": "\(failure.loggableDescription)"])
                return internalError()
            }
        default:
            logger.error("unhandled server error", metadata: ["error": "\(String(reflecting: type(of: error)))"])
            return internalError()
        }
    }

    /// What a provider's answer means to the gateway's client: its refusals are the client's, everything else is
    /// the provider's failure.
    static func providerFailure(_ error: ProviderError) -> GatewayError {
        switch error {
        case .unknownAccount(let account): return .unknownAccount(account)
        case .unavailable(let why): return .providerUnavailable(why)
        case .insufficientFunds, .referenceConflict, .idempotencyKeyReused, .requestInFlight, .corruptRow, .rejected,
            .unknownPayout, .payoutState:
            return .providerUnavailable("the provider refused the call (\(error))")
        }
    }

    static func internalError() -> Response {
        JSONResponse.make(
            .internalServerError,
            .object([
                ("error", .string("internal_error")),
                ("detail", .string("an unexpected server error occurred")),
            ]))
    }
}

enum JSONResponse {
    static func make(_ status: HTTPResponse.Status, _ value: JSONValue, headers extra: HTTPFields = [:]) -> Response {
        make(status, text: JSONText.render(value), headers: extra)
    }

    static func make(_ status: HTTPResponse.Status, text: String, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Catches every error below it, including unknown routes, and answers JSON.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return ErrorMapping.response(for: error, logger: context.logger)
        }
    }
}
