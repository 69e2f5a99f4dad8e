// /docs: renders /openapi.json (served as a file: the pages' CSP allows no inline script).
"use strict";
function el(tag, attrs, ...kids){const e=document.createElement(tag);
  for(const [k,v] of Object.entries(attrs||{})){e.setAttribute(k,v);}
  for(const k of kids){e.append(k instanceof Node?k:document.createTextNode(String(k)));}return e;}
function resolve(spec, s){return s&&s.$ref?spec.components.schemas[s.$ref.split("/").pop()]:s;}
function render(spec){
  document.getElementById("desc").textContent=spec.info.description||"";
  const groups={};
  for(const [path,ops] of Object.entries(spec.paths)){for(const [method,op] of Object.entries(ops)){
    const tag=(op.tags||["other"])[0];(groups[tag]=groups[tag]||[]).push([path,method,op]);}}
  const out=document.getElementById("out");out.textContent="";
  for(const tag of Object.keys(groups).sort()){
    out.append(el("h2",{},tag));
    for(const [path,method,op] of groups[tag]){
      const d=el("details",{"data-q":(path+" "+op.summary).toLowerCase()});
      d.append(el("summary",{},el("span",{class:"m "+method},method.toUpperCase()),
        el("code",{},path),el("span",{},op.summary||"")));
      const body=el("div",{class:"body"});
      if(op.description){body.append(el("p",{},op.description));}
      if(op.security){body.append(el("p",{},"Auth: "+op.security.map(s=>Object.keys(s)[0]).join(", ")));}
      if(op.parameters){
        const t=el("table",{},el("tr",{},el("th",{},"parameter"),el("th",{},"in"),
          el("th",{},"required"),el("th",{},"schema")));
        for(const p of op.parameters){
          t.append(el("tr",{},el("td",{},el("code",{},p.name)),el("td",{},p.in),
            el("td",{},p.required?"yes":""),el("td",{},el("code",{},JSON.stringify(p.schema)))));}
        body.append(t);}
      if(op.requestBody){const s=op.requestBody.content["application/json"].schema;
        body.append(el("p",{},"Request body"),el("pre",{},JSON.stringify(resolve(spec,s),null,2)));}
      for(const [code,r] of Object.entries(op.responses||{})){
        const c=r.content&&Object.values(r.content)[0];
        body.append(el("p",{},"Response "+code+": "+(r.description||"")));
        if(c&&c.schema&&code<"400"){body.append(el("pre",{},JSON.stringify(resolve(spec,c.schema),null,2)));}}
      d.append(body);out.append(d);}}
}
document.getElementById("filter").addEventListener("input",e=>{const q=e.target.value.toLowerCase();
  for(const d of document.querySelectorAll("details")){d.style.display=d.dataset.q.includes(q)?"":"none";}});
fetch("/openapi.json").then(r=>r.json()).then(render)
  .catch(e=>{document.getElementById("out").textContent="Cannot load /openapi.json: "+e;});
