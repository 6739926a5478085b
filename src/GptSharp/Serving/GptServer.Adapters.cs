using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>LoRA adapters loaded and unloaded at run time (<c>POST /v1/adapters</c>, <c>DELETE /v1/adapters/{base:name}</c>), with the admin key.</summary>
public sealed partial class GptServer
{
    /// <summary>POST /v1/adapters {"model": base, "name", "path": a LoRA run's folder on this machine} → 201 and the adapter's model object.</summary>
    async Task LoadAdapter(HttpContext context)
    {
        var body = await Body(context);
        string Field(string name) => body.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && StringField(v, name) is { Length: > 0 } text
            ? text : throw new ApiError(400, $"'{name}' is required and must be a non-empty string.", name);
        var model = Find(Field("model"));
        string name = Field("name"), path = Field("path");
        try { model.LoadAdapter(name, path); }
        catch (InvalidOperationException e) { throw new ApiError(409, e.Message, "name", "adapter_exists"); }
        catch (ArgumentException e) { throw new ApiError(400, e.Message.Split(" (Parameter")[0], e.ParamName == "name" ? "name" : "path"); }
        catch (InvalidDataException e) { throw new ApiError(400, e.Message, "path", "adapter_mismatch"); }
        catch (NotSupportedException e) { throw new ApiError(400, e.Message, "model", "adapter_unsupported"); }
        context.Response.StatusCode = 201;
        await context.Response.WriteAsJsonAsync(AdapterObject(model, name), Json, context.RequestAborted);
    }

    /// <summary>DELETE /v1/adapters/{base:name}: stops serving it (requests decoding with it finish).</summary>
    IResult UnloadAdapter(string id)
    {
        int colon = id.IndexOf(':');
        var model = colon > 0 ? Find(id[..colon], param: null) : throw new ApiError(400, $"'{id}' names no adapter: expected base:name.");
        return model.RemoveAdapter(id[(colon + 1)..]) ? Results.Json(new { id, @object = "model", deleted = true }, Json)
            : throw new ApiError(404, $"'{model.Name}' serves no adapter '{id[(colon + 1)..]}'.", code: "model_not_found");
    }
}
